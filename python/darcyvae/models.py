"""DenseVAE and its priors (docs/model.md §4a,§4c).

Public names
------------
VAEConfig
    Frozen configuration of a DenseVAE and its prior.
DenseEncoder, DenseDecoder
    q_phi(z|y) (two networks of the same shape: mean and log-variance) and
    p_psi(y|z) (a mean network plus a learned constant N x N log-variance).
StandardNormalPrior, ScaledGaussianPrior, HierarchicalPrior
    The priors: N(0, I), N(0, diag v) and the hierarchical prior of docs/model.md §4c.
DenseVAE, VAEOutput, VAENoise
    The model, the named tuple its ``forward`` returns and its pre-drawn
    noise (``DenseVAE.draw_noise``).
count_parameters
    Parameter totals per part (encoder networks, decoder, output
    log-variances, prior).
register_model, list_models, model_config, get_model
    Registry of named configurations; ``dense_vae_paper``,
    ``dense_vae_small``, ``dense_vae_tiny`` are the factories.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_int, config_kwargs

__all__ = [
    "HP_DECODERS",
    "HP_VARIANTS",
    "OUTPUT_LOGVAR_INITS",
    "DenseDecoder",
    "DenseEncoder",
    "DenseVAE",
    "HierarchicalPrior",
    "ScaledGaussianPrior",
    "StandardNormalPrior",
    "VAEConfig",
    "VAENoise",
    "VAEOutput",
    "count_parameters",
    "dense_vae_paper",
    "dense_vae_small",
    "dense_vae_tiny",
    "get_model",
    "list_models",
    "model_config",
    "register_model",
]

PRIORS = ("std_norm", "scaled_gaussian", "hierarchical")
"""Prior names understood by ``VAEConfig.prior``."""

HP_VARIANTS = ("const", "full")
"""Hierarchical-prior log-variance variants: learned constants or MLP outputs."""

HP_DECODERS = ("mlp", "released")

OUTPUT_LOGVAR_INITS = ("zero", "data")
"""Starts of the decoder's output log-variance (``VAEConfig.output_logvar_init``)."""
"""Hierarchical-prior decoder networks (docs/model.md §4c): ``mlp``, the described n -> 8n -> 8n -> n
MLP without output activation; ``released``, the network the authors' released code
actually runs, Linear(n, 8n) -> ReLU -> Linear(8n, n) -> ReLU (outputs >= 0)."""


@dataclass(frozen=True)
class VAEConfig:
    """Configuration of a DenseVAE (docs/model.md §4a) and its prior (docs/model.md §4b,§4c).

    Parameters
    ----------
    grid : int, default=65
        Field size N (odd, >= 5: the architecture maps N -> (N-1)/2 -> ...
        and back to N; even N cannot be reached by its transposed convolutions).
    channels : int, default=3
        Field channels (p, u_x, u_y).
    latent_dim : int, default=2
        Latent dimension n.
    blocks : tuple of int, default=(4, 6, 4)
        Layers per dense block; an odd count >= 3. The first ``len // 2``
        blocks encode, the rest decode.
    growth_rate : int, default=4
        Features added by each dense layer (g).
    init_features : int, default=2
        Features after the first 7x7 convolution.
    fc_hidden : int or None, default=None
        Width of the hidden fully connected layer of the encoder and decoder
        heads; None means half the flattened bottleneck (1152 on the 65 grid).
    prior : {"std_norm", "scaled_gaussian", "hierarchical"}, default="std_norm"
    prior_variance : tuple of float or None, default=None
        The variances v of ``scaled_gaussian`` (one per latent dimension;
        required there, unused otherwise).
    hp_variant : {"const", "full"}, default="const"
        Hierarchical prior log-variances: learned constants or MLP outputs.
    hp_width : int, default=8
        Hidden width of the hierarchical prior MLPs as a multiple of n
        (n -> 8n -> 8n -> n).
    hp_decoder : {"mlp", "released"}, default="mlp"
        The prior decoder p_pi(z|xi) (docs/model.md §4c): ``"mlp"`` is the network the
        paper describes (n -> 8n -> 8n -> n, no output activation);
        ``"released"`` is what the authors' released code runs (its module
        name 'FullConn2' is registered twice, so the network is Linear(n, 8n)
        -> ReLU -> Linear(8n, n) -> ReLU: the prior mean, and in the "full"
        variant t_z, are >= 0). The presets that reproduce paper figures use
        ``"released"``.
    xavier_init : bool, default=False
        Xavier-uniform weights and zero biases in every convolution and
        linear layer (the loss-landscape experiment's initialisation);
        otherwise PyTorch's default initialisation.
    output_logvar_init : {"zero", "data"}, default="zero"
        Start of the decoder's output log-variance s (docs/model.md §4a):
        ``"zero"`` as in the paper; ``"data"`` the log of the training data's
        per-pixel variance averaged over the channels, in the units the model
        sees (the Theorem-1 optimum, docs/model.md §4e). The model itself
        always starts at zero; training (single runs and ensembles alike)
        applies ``"data"`` from the training set it is given.

    Raises
    ------
    ValueError, TypeError
        On any value outside the ranges above.
    """

    grid: int = 65
    channels: int = 3
    latent_dim: int = 2
    blocks: tuple[int, ...] = (4, 6, 4)
    growth_rate: int = 4
    init_features: int = 2
    fc_hidden: int | None = None
    prior: str = "std_norm"
    prior_variance: tuple[float, ...] | None = None
    hp_variant: str = "const"
    hp_width: int = 8
    xavier_init: bool = False
    hp_decoder: str = "mlp"
    output_logvar_init: str = "zero"

    def __post_init__(self) -> None:
        caller = "VAEConfig"
        grid = check_int(self.grid, "grid", caller, low=5)
        if grid % 2 == 0:
            msg = f"{caller}: grid must be an odd integer >= 5 (e.g. 17, 33, 65); got {grid}."
            raise ValueError(msg)
        check_int(self.channels, "channels", caller, low=1)
        check_int(self.latent_dim, "latent_dim", caller, low=1)
        blocks = tuple(self.blocks)
        if len(blocks) < 3 or len(blocks) % 2 == 0:
            msg = f"{caller}: blocks must be an odd number (>= 3) of layer counts; got {blocks}."
            raise ValueError(msg)
        for b in blocks:
            check_int(b, "each entry of blocks", caller, low=1)
        object.__setattr__(self, "blocks", tuple(int(b) for b in blocks))
        check_int(self.growth_rate, "growth_rate", caller, low=1)
        check_int(self.init_features, "init_features", caller, low=1)
        if self.fc_hidden is not None:
            check_int(self.fc_hidden, "fc_hidden", caller, low=1)
        check_choice(self.prior, "prior", caller, PRIORS)
        check_choice(self.hp_variant, "hp_variant", caller, HP_VARIANTS)
        check_int(self.hp_width, "hp_width", caller, low=1)
        check_choice(self.hp_decoder, "hp_decoder", caller, HP_DECODERS)
        check_choice(self.output_logvar_init, "output_logvar_init", caller, OUTPUT_LOGVAR_INITS)
        if not isinstance(self.xavier_init, bool):
            msg = f"{caller}: xavier_init must be a bool; got {self.xavier_init!r}."
            raise TypeError(msg)
        if self.prior == "scaled_gaussian":
            pv = self.prior_variance
            if pv is None or len(pv) != self.latent_dim:
                msg = (
                    f"{caller}: prior_variance must give one variance per latent dimension "
                    f"({self.latent_dim}) for the scaled_gaussian prior; got {pv!r}."
                )
                raise ValueError(msg)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in pv):
                msg = f"{caller}: prior_variance must be finite and > 0; got {pv!r}."
                raise ValueError(msg)
            object.__setattr__(self, "prior_variance", tuple(float(v) for v in pv))
        elif self.prior_variance is not None:
            msg = f"{caller}: prior_variance is only used by the scaled_gaussian prior; got {self.prior}."
            raise ValueError(msg)

    @property
    def n_encoder_blocks(self) -> int:
        """Number of dense blocks in each encoder network (``len(blocks) // 2``)."""
        return len(self.blocks) // 2

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists, None dropped), the form TOML and JSON store."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        kw = config_kwargs(cls, data)
        return cls(**kw)


class _Architecture(NamedTuple):
    """Spatial sizes and bottleneck derived from a VAEConfig."""

    sizes: tuple[int, ...]  # grid, after conv0, after each transition down
    bottleneck_features: int
    bottleneck_size: int
    flat: int
    hidden: int


def _down(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _architecture(config: VAEConfig) -> _Architecture:
    """Sizes of the encoder levels: N -> (N-1)/2 (7x7 stride 2 pad 2), then ceil(s/2) per level."""
    sizes = [config.grid, _down(config.grid, 7, 2, 2)]
    f = config.init_features
    for layers in config.blocks[: config.n_encoder_blocks]:
        f = (f + layers * config.growth_rate) // 2
        sizes.append(_down(sizes[-1], 3, 2, 1))
    flat = f * sizes[-1] * sizes[-1]
    hidden = config.fc_hidden if config.fc_hidden is not None else max(flat // 2, 1)
    return _Architecture(tuple(sizes), f, sizes[-1], flat, hidden)


# --------------------------------------------------------------------------- blocks


class _DenseLayer(nn.Sequential):
    """BN -> ReLU -> Conv3x3(growth, no bias); output concatenated to the input."""

    def __init__(self, in_features: int, growth_rate: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_features, growth_rate, 3, stride=1, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, super().forward(x)], dim=1)


class _DenseBlock(nn.Sequential):
    """``layers`` dense layers: features F -> F + layers * growth_rate."""

    def __init__(self, layers: int, in_features: int, growth_rate: int) -> None:
        super().__init__()
        for i in range(layers):
            self.add_module(
                f"denselayer{i + 1}", _DenseLayer(in_features + i * growth_rate, growth_rate)
            )


class _Bottleneck(nn.Sequential):
    """BN, ReLU, Conv1x1(F -> F_out), BN, ReLU: how every transition starts.

    Subclasses append the resampling convolution(s); the module names
    (``norm1`` .. ``relu2``) are those of the authors' state dicts.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_features, out_features, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_features)
        self.relu2 = nn.ReLU(inplace=True)


class _TransitionDown(_Bottleneck):
    """BN, ReLU, Conv1x1(F -> F_out), BN, ReLU, Conv3x3 stride 2 pad 1 (size -> ceil(size/2))."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.conv2 = nn.Conv2d(out_features, out_features, 3, stride=2, padding=1, bias=False)


class _TransitionUp(_Bottleneck):
    """BN, ReLU, Conv1x1(F -> F_out), BN, ReLU, ConvTranspose3x3 stride 2 pad 1.

    ``output_padding`` (0 or 1) makes the output size 2 * size - 1 + output_padding,
    the size of the matching encoder level.
    """

    def __init__(self, in_features: int, out_features: int, output_padding: int) -> None:
        super().__init__(in_features, out_features)
        self.convT2 = nn.ConvTranspose2d(
            out_features,
            out_features,
            3,
            stride=2,
            padding=1,
            output_padding=output_padding,
            bias=False,
        )


class _LastDecoding(_Bottleneck):
    """BN, ReLU, Conv1x1(F -> F/2), BN, ReLU, ConvTranspose4x4 s2 p1 op1 (-> C x N x N), Conv5x5."""

    def __init__(self, in_features: int, channels: int) -> None:
        mid = in_features // 2
        super().__init__(in_features, mid)
        self.convT2 = nn.ConvTranspose2d(
            mid, channels, 4, stride=2, padding=1, output_padding=1, bias=False
        )
        self.conv3 = nn.Conv2d(channels, channels, 5, padding=2, bias=False)


def _released_mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """The released prior decoder: n_in -> hidden -> n_out with ReLU after both layers.

    The authors' code adds FullConn1, ReLU1, FullConn2 (hidden -> hidden),
    ReLU2, FullConn2 (hidden -> n_out); the second 'FullConn2' replaces the
    first in place, leaving Linear -> ReLU -> Linear -> ReLU (docs/model.md §4c).
    """
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(n_in, hidden),
            relu1=nn.ReLU(),
            fc2=nn.Linear(hidden, n_out),
            relu2=nn.ReLU(),
        )
    )


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """n_in -> hidden -> hidden -> n_out with ReLU between, no output activation."""
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(n_in, hidden),
            relu1=nn.ReLU(),
            fc2=nn.Linear(hidden, hidden),
            relu2=nn.ReLU(),
            fc3=nn.Linear(hidden, n_out),
        )
    )


# --------------------------------------------------------------------------- encoder / decoder


class _EncoderNetwork(nn.Module):
    """One encoder network: Conv7x7 s2 p2, (dense block, transition down)*, flatten, MLP head."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        arch = _architecture(config)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv0"] = nn.Conv2d(
            config.channels, config.init_features, 7, stride=2, padding=2, bias=False
        )
        f = config.init_features
        for i, n_layers in enumerate(config.blocks[: config.n_encoder_blocks]):
            layers[f"dense{i + 1}"] = _DenseBlock(n_layers, f, config.growth_rate)
            f = f + n_layers * config.growth_rate
            layers[f"down{i + 1}"] = _TransitionDown(f, f // 2)
            f = f // 2
        self.features = nn.Sequential(layers)
        self.head = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(arch.flat, arch.hidden),
                relu1=nn.ReLU(inplace=True),
                fc2=nn.Linear(arch.hidden, config.latent_dim),
            )
        )

    def forward(self, y: Tensor) -> Tensor:
        return self.head(torch.flatten(self.features(y), 1))


class DenseEncoder(nn.Module):
    """q_phi(z|y) = N(mu(y), diag exp(logvar(y))): two DenseNet encoders of the same shape.

    Parameters
    ----------
    config : VAEConfig

    Notes
    -----
    Each network (docs/model.md §4a, paper configuration): Conv7x7 stride 2 pad 2
    (3 -> 2 features, 65 -> 32), dense block(4) -> 18 features, transition
    down -> 9 x 16 x 16, flatten (2304), Linear(2304 -> 1152), ReLU,
    Linear(1152 -> n). Intermediate sizes follow from ``config.grid``.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.mean_net = _EncoderNetwork(config)
        self.logvar_net = _EncoderNetwork(config)

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(mu, logvar)``, each of shape (batch, latent_dim), for ``y`` (batch, C, N, N)."""
        return self.mean_net(y), self.logvar_net(y)


class DenseDecoder(nn.Module):
    """p_psi(y|z) = N(mu_psi(z), exp(s)) with s a learned constant N x N log-variance.

    Parameters
    ----------
    config : VAEConfig

    Attributes
    ----------
    output_logvar : nn.Parameter of shape (1, 1, N, N)
        The log-variance s, shared over channels and samples (initialised to
        0; training sets it from the data when ``output_logvar_init="data"``).

    Notes
    -----
    docs/model.md §4a, paper configuration: Linear(n -> 1152), ReLU, Linear(1152 ->
    2304), reshape 9 x 16 x 16, dense block(6) -> 33, transition up -> 16 x
    32 x 32, dense block(4) -> 32, then BN, ReLU, Conv1x1(32 -> 16), BN,
    ReLU, ConvTranspose4x4 stride 2 pad 1 output_pad 1 (-> 3 x 65 x 65),
    Conv5x5 pad 2 without bias.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        arch = _architecture(config)
        self._bottleneck = (arch.bottleneck_features, arch.bottleneck_size, arch.bottleneck_size)
        self.head = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(config.latent_dim, arch.hidden),
                relu1=nn.ReLU(inplace=True),
                fc2=nn.Linear(arch.hidden, arch.flat),
            )
        )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        f = arch.bottleneck_features
        decoding = config.blocks[config.n_encoder_blocks :]
        # Encoder sizes after conv0 and each transition down; the decoder climbs back.
        enc_sizes = arch.sizes[1:]
        level = len(enc_sizes) - 1
        for i, n_layers in enumerate(decoding):
            layers[f"dense{i + 1}"] = _DenseBlock(n_layers, f, config.growth_rate)
            f = f + n_layers * config.growth_rate
            if i < len(decoding) - 1:
                size, target = enc_sizes[level], enc_sizes[level - 1]
                layers[f"up{i + 1}"] = _TransitionUp(f, f // 2, target - (2 * size - 1))
                f = f // 2
                level -= 1
        layers["last"] = _LastDecoding(f, config.channels)
        self.features = nn.Sequential(layers)
        self.output_logvar = nn.Parameter(torch.zeros(1, 1, config.grid, config.grid))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(mean, logvar)``: (batch, C, N, N) and the shared (1, 1, N, N)."""
        h = self.head(z).view(z.shape[0], *self._bottleneck)
        return self.features(h), self.output_logvar


# --------------------------------------------------------------------------- priors


class ScaledGaussianPrior(nn.Module):
    """p(z) = N(0, diag v) with fixed variances v (docs/model.md §4b).

    Parameters
    ----------
    variance : sequence of float
        One positive variance per latent dimension.

    Attributes
    ----------
    variance : Tensor of shape (n,)
        A buffer (moves with the module, not trained).
    """

    def __init__(self, variance: tuple[float, ...] | list[float]) -> None:
        super().__init__()
        self.register_buffer("variance", torch.tensor(variance, dtype=torch.float32))

    @property
    def latent_dim(self) -> int:
        """Latent dimension n."""
        return int(self.variance.shape[0])

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples, shape (n, latent_dim), on the prior's device."""
        eps = torch.randn((n, self.latent_dim), generator=generator, device=self.variance.device)
        return eps * self.variance.sqrt()


class StandardNormalPrior(ScaledGaussianPrior):
    """p(z) = N(0, I_n), the rotation-invariant default (``prior="std_norm"``)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__([1.0] * latent_dim)


class HierarchicalPrior(nn.Module):
    """Hierarchical prior p(z) = integral p_pi(z|xi) N(xi; 0, I) dxi (docs/model.md §4c).

    Parameters
    ----------
    latent_dim : int
        n, the dimension of z and of the sub-prior variable xi.
    variant : {"const", "full"}, default="const"
        Log-variances t_xi, t_z as learned constants or as MLP outputs.
    width : int, default=8
        Hidden width of the MLPs as a multiple of n.
    decoder : {"mlp", "released"}, default="mlp"
        The prior decoder networks (m_pi, and t_z in the "full" variant):
        the described MLP or the released code's Linear -> ReLU -> Linear ->
        ReLU (see ``VAEConfig.hp_decoder``).

    Attributes
    ----------
    enc_mean : nn.Sequential
        m_gamma: z -> mean of q_gamma(xi|z), an MLP n -> 8n -> 8n -> n with
        ReLU between layers and no output activation.
    dec_mean : nn.Sequential
        m_pi: xi -> mean of p_pi(z|xi): the same shape (``mlp``) or
        Linear(n, 8n) -> ReLU -> Linear(8n, n) -> ReLU (``released``).
    enc_logvar, dec_logvar : nn.Parameter of shape (n,) or nn.Sequential
        t_xi and t_z: constants (initialised to 0) or networks of the same
        shape as ``enc_mean`` and ``dec_mean``.
    """

    def __init__(
        self, latent_dim: int, variant: str = "const", width: int = 8, decoder: str = "mlp"
    ) -> None:
        super().__init__()
        check_choice(variant, "variant", "HierarchicalPrior", HP_VARIANTS)
        check_choice(decoder, "decoder", "HierarchicalPrior", HP_DECODERS)
        n, hidden = latent_dim, width * latent_dim
        self.variant = variant
        self.decoder = decoder
        dec_net = _released_mlp if decoder == "released" else _mlp
        self.enc_mean = _mlp(n, hidden, n)
        self.dec_mean = dec_net(n, hidden, n)
        if variant == "full":
            self.enc_logvar: nn.Module | nn.Parameter = _mlp(n, hidden, n)
            self.dec_logvar: nn.Module | nn.Parameter = dec_net(n, hidden, n)
        else:
            self.enc_logvar = nn.Parameter(torch.zeros(n))
            self.dec_logvar = nn.Parameter(torch.zeros(n))
        self._latent_dim = n

    @property
    def latent_dim(self) -> int:
        """Latent dimension n."""
        return self._latent_dim

    @staticmethod
    def _logvar(part: nn.Module | nn.Parameter, x: Tensor) -> Tensor:
        # A module ("full" variant) maps x; anything else is the learned
        # constant ("const"), which under torch.func.functional_call is a plain
        # tensor rather than an nn.Parameter.
        if isinstance(part, nn.Module):
            return part(x)
        return part.expand_as(x)

    def encode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """q_gamma(xi|z): ``(mean, logvar)`` of shape (batch, n)."""
        return self.enc_mean(z), self._logvar(self.enc_logvar, z)

    def decode(self, xi: Tensor) -> tuple[Tensor, Tensor]:
        """p_pi(z|xi): ``(mean, logvar)`` of shape (batch, n)."""
        return self.dec_mean(xi), self._logvar(self.dec_logvar, xi)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Sample the learned prior: xi ~ N(0, I), z ~ p_pi(z|xi); shape (n, latent_dim)."""
        device = self.enc_mean.fc1.weight.device
        xi = torch.randn((n, self.latent_dim), generator=generator, device=device)
        mean, logvar = self.decode(xi)
        eps = torch.randn(mean.shape, generator=generator, device=device)
        return mean + torch.exp(0.5 * logvar) * eps


# --------------------------------------------------------------------------- the VAE


class VAENoise(NamedTuple):
    """Pre-drawn reparameterisation noise of one batch (see ``DenseVAE.draw_noise``)."""

    z: Tensor
    """Standard normal eps of z = mu + exp(logvar / 2) * eps, (batch, n); drawn first."""
    xi: Tensor | None
    """Standard normal eps of xi ~ q_gamma(xi|z) in the HP bound, (batch, n), drawn
    second; None without the hierarchical prior."""


class VAEOutput(NamedTuple):
    """What ``DenseVAE.forward`` returns."""

    mu: Tensor
    """Encoder mean, (batch, n)."""
    logvar: Tensor
    """Encoder log-variance, (batch, n)."""
    z: Tensor
    """Reparameterised sample z = mu + exp(logvar / 2) * eps, (batch, n)."""
    y_mean: Tensor
    """Decoder mean mu_psi(z), (batch, C, N, N)."""
    y_logvar: Tensor
    """Decoder log-variance s, (1, 1, N, N), shared over channels."""


class DenseVAE(nn.Module):
    """The DenseVAE of Jacobsen & Duraisamy (2022) with its prior.

    Parameters
    ----------
    config : VAEConfig, default=VAEConfig()
        The paper configuration by default (about 8.0M parameters).

    Attributes
    ----------
    encoder : DenseEncoder
    decoder : DenseDecoder
    prior : StandardNormalPrior, ScaledGaussianPrior or HierarchicalPrior

    Examples
    --------
    >>> model = DenseVAE(VAEConfig(grid=17, blocks=(2, 2, 2)))
    >>> out = model(torch.zeros(4, 3, 17, 17))
    >>> tuple(out.y_mean.shape), tuple(out.z.shape)
    ((4, 3, 17, 17), (4, 2))
    """

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else VAEConfig()
        c = self.config
        self.encoder = DenseEncoder(c)
        self.decoder = DenseDecoder(c)
        self.prior: nn.Module
        if c.prior == "hierarchical":
            self.prior = HierarchicalPrior(c.latent_dim, c.hp_variant, c.hp_width, c.hp_decoder)
        elif c.prior == "scaled_gaussian":
            self.prior = ScaledGaussianPrior(c.prior_variance)
        else:
            self.prior = StandardNormalPrior(c.latent_dim)
        if c.xavier_init:
            _xavier_init(self)

    @property
    def hierarchical(self) -> bool:
        """True when the prior is the hierarchical prior."""
        return isinstance(self.prior, HierarchicalPrior)

    def encode(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of q_phi(z|y), each (batch, n)."""
        return self.encoder(y)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, logvar)`` of p_psi(y|z): (batch, C, N, N) and (1, 1, N, N)."""
        return self.decoder(z)

    def draw_noise(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        labeled: int = 0,
    ) -> VAENoise:
        """The noise one training step draws, as explicit tensors (for batched ensembles).

        Draw order (the same as ``vae_loss(model, y, generator=g)``): first
        eps_z = randn(batch, n) in ``forward``, then, with the hierarchical
        prior, eps_xi = randn(batch, n) in ``hierarchical_bound_terms``.
        So ``vae_loss(model, y, noise=model.draw_noise(len(y), g))`` gives
        exactly what ``vae_loss(model, y, generator=g2)`` gives when ``g2``
        starts in the state ``g`` had, and leaves both generators in the
        same state.

        Parameters
        ----------
        batch : int
        generator : torch.Generator or None
            None: torch's global generator.
        device, dtype : optional
            Default: the device and dtype of the model's parameters.
        labeled : int
            Labelled pairs appended to the batch in the same forward pass
            (``labels.forward="concat"``, docs/model.md §4f): eps_z then has
            ``batch + labeled`` rows (one draw for the concatenated batch) and
            eps_xi ``batch`` rows (the bound is taken on the unlabelled part).

        Returns
        -------
        VAENoise
        """
        check_int(batch, "batch", "DenseVAE.draw_noise", low=1)
        check_int(labeled, "labeled", "DenseVAE.draw_noise", low=0)
        param = next(self.parameters())
        device = param.device if device is None else torch.device(device)
        dtype = param.dtype if dtype is None else dtype
        shape = (batch, self.config.latent_dim)
        eps_z = torch.randn(
            (batch + labeled, shape[1]), generator=generator, device=device, dtype=dtype
        )
        eps_xi = None
        if self.hierarchical:
            eps_xi = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return VAENoise(eps_z, eps_xi)

    def forward(
        self,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        noise: VAENoise | Tensor | None = None,
    ) -> VAEOutput:
        """Encode ``y`` (batch, C, N, N), draw one z per sample, decode it.

        ``generator`` draws the reparameterisation noise (None: torch's
        global generator); ``noise`` gives it instead (a ``VAENoise`` or
        the eps_z tensor, shape (batch, n); see ``draw_noise``).
        """
        mu, logvar = self.encoder(y)
        if noise is not None:
            eps = noise.z if isinstance(noise, VAENoise) else noise
            if tuple(eps.shape) != tuple(mu.shape):
                msg = (
                    f"DenseVAE.forward: noise must have shape {tuple(mu.shape)} "
                    f"(batch, latent_dim); got {tuple(eps.shape)}."
                )
                raise ValueError(msg)
        else:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        y_mean, y_logvar = self.decoder(z)
        return VAEOutput(mu, logvar, z, y_mean, y_logvar)

    @torch.no_grad()
    def sample_prior(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples of the (learned) prior p(z), shape (n, latent_dim)."""
        check_int(n, "n", "DenseVAE.sample_prior", low=1)
        return self.prior.sample(n, generator=generator)

    @torch.no_grad()
    def generate(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Decoder means of ``n`` prior samples, shape (n, C, N, N) (eval-mode BN advised)."""
        return self.decoder(self.sample_prior(n, generator=generator))[0]


def _xavier_init(model: nn.Module) -> None:
    """The one place for non-default initialisation: Xavier-uniform weights, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_parameters(model: DenseVAE) -> dict[str, int]:
    """Trainable parameter totals of a DenseVAE, per part.

    Returns
    -------
    dict
        ``encoder_mean``, ``encoder_logvar`` (each encoder network),
        ``decoder`` (without the output log-variances), ``output_logvar``
        (N^2), ``prior`` and ``total``. The paper configuration gives about
        2.66M, 2.66M, 2.67M, 4,225, 0 and 8.0M (docs/model.md §4a).
    """

    def n(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    out_logvar = model.decoder.output_logvar.numel()
    counts = {
        "encoder_mean": n(model.encoder.mean_net),
        "encoder_logvar": n(model.encoder.logvar_net),
        "decoder": n(model.decoder) - out_logvar,
        "output_logvar": out_logvar,
        "prior": n(model.prior),
    }
    counts["total"] = n(model)
    return counts


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _ModelEntry:
    name: str
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)


_MODELS: dict[str, _ModelEntry] = {}
"""Named DenseVAE configurations (filled by ``register_model``)."""


def register_model(name: str, description: str, **defaults: Any) -> Callable:
    """Decorator registering a factory under ``name`` with its VAEConfig defaults.

    A duplicate name raises ``ValueError``.
    """

    def decorate(fn: Callable[..., DenseVAE]) -> Callable[..., DenseVAE]:
        if name in _MODELS:
            msg = f"register_model: a model named {name!r} already exists."
            raise ValueError(msg)
        VAEConfig(**defaults)  # fail at import time on a broken preset
        _MODELS[name] = _ModelEntry(name, description, dict(defaults))
        return fn

    return decorate


def list_models() -> list[tuple[str, str]]:
    """``(name, description)`` of every registered model, sorted by name."""
    return [(e.name, e.description) for e in sorted(_MODELS.values(), key=lambda e: e.name)]


def model_config(name: str, **overrides: Any) -> VAEConfig:
    """The VAEConfig of registered model ``name`` with ``overrides`` applied."""
    if name not in _MODELS:
        msg = f"model_config: unknown model {name!r}; known: {', '.join(sorted(_MODELS))}."
        raise ValueError(msg)
    return VAEConfig(**{**_MODELS[name].defaults, **overrides})


def get_model(name: str, **overrides: Any) -> DenseVAE:
    """Build registered model ``name`` (``overrides`` go to its VAEConfig)."""
    return DenseVAE(model_config(name, **overrides))


@register_model(
    "dense_vae_paper", "docs/model.md §4a: 65 grid, blocks (4, 6, 4), g 4, ~8.0M parameters"
)
def dense_vae_paper(**overrides: Any) -> DenseVAE:
    """The paper's DenseVAE (docs/model.md §4a): ``VAEConfig()`` with ``overrides``."""
    return get_model("dense_vae_paper", **overrides)


@register_model("dense_vae_small", "33 grid, blocks (4, 6, 4), g 4 (~0.5M parameters)", grid=33)
def dense_vae_small(**overrides: Any) -> DenseVAE:
    """The paper's blocks on a 33 x 33 grid (fast CPU runs)."""
    return get_model("dense_vae_small", **overrides)


@register_model(
    "dense_vae_tiny", "17 grid, blocks (2, 2, 2), g 4 (tests, seconds)", grid=17, blocks=(2, 2, 2)
)
def dense_vae_tiny(**overrides: Any) -> DenseVAE:
    """A very small DenseVAE on a 17 x 17 grid, for tests."""
    return get_model("dense_vae_tiny", **overrides)
