"""``darcyvae train`` (one run, or many seeds as ensembles)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import check_out, print_splits, set_threads


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a DenseVAE with the paper's method",
        description="Train a DenseVAE (docs/model.md §4d-§4f) from a TOML configuration or a shipped "
        "preset; writes OUT/config.toml, metrics.jsonl, checkpoint.pt and summary.json.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="run configuration (TOML, see darcyvae.config.TrainConfig)")
    src.add_argument("--preset", help="a shipped configuration (see --list)")
    src.add_argument("--list", action="store_true", help="list presets and models and exit")
    p.add_argument("--train", dest="train_data", help="training data (HDF5)")
    p.add_argument("--test", dest="test_data", default=None, help="test data (HDF5)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA if present), cpu or cuda (default: auto)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting of the configuration (repeatable), e.g. --set run.seed=3 "
        "--set 'optim.lr_values=[1e-3,1e-4]' --set model.prior=hierarchical "
        "--set model.preset=dense_vae_tiny; VALUE is read as TOML, else as a bare string",
    )
    p.add_argument("--seed", type=int, default=None, help="override the configuration's seed")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--allow-data-change",
        action="store_true",
        help="with --resume: accept training data that differ from the checkpoint's",
    )
    p.add_argument(
        "--restarts",
        type=int,
        default=None,
        help="restart over-regularised runs with seeds from the restart stream "
        "(OUT/seed_<s>, OUT/seed_<s>.restart_<r>, OUT/ensemble.json)",
    )
    p.add_argument(
        "--seeds",
        default=None,
        metavar="LIST",
        help="train these seeds at once as one batched model, e.g. 0-49 or 3,7,11 "
        "(OUT/seed_<s>/ per member, OUT/ensemble.json)",
    )
    p.add_argument(
        "--seeds-per-block",
        type=int,
        default=None,
        metavar="B",
        help="with --seeds: at most B members per batched model (lower it when memory runs out)",
    )
    p.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="with --seeds: run one block of seeds per worker of this dask scheduler",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="with --seeds: train the blocks in N local processes at once, the threads shared "
        "out (seeds split into N blocks unless --seeds-per-block); on 2 cores --workers 2 does "
        "about 1.2x the work",
    )
    p.add_argument(
        "--no-progress",
        "--quiet",
        dest="no_progress",
        action="store_true",
        help="no progress bar (--quiet: the same, its older name)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads, at most darcyvae.darcy.MAX_THREADS (default: torch's choice)",
    )
    p.set_defaults(func=_run_train, _parser=p)


def _run_train(args: argparse.Namespace) -> int:

    from .. import config as config_mod
    from .. import models, training

    set_threads(args.threads, "train")
    if args.list:
        print("presets (--preset NAME):")
        for name, description in config_mod.list_presets():
            print(f"  {name:24s} {description}")
        print("models ([model] preset = NAME in a config, or --set model.preset=NAME):")
        for name, description in models.list_models():
            print(f"  {name:24s} {description}")
        return 0
    if not (args.config or args.preset):
        print(args._parser.format_usage(), end="", file=sys.stderr)
        print(
            "darcyvae train: error: one of --config FILE or --preset NAME is required "
            "(--list shows the presets)",
            file=sys.stderr,
        )
        return 2
    check_out(args.out)
    if not args.train_data:
        msg = "--train DATA.h5 is required"
        raise ValueError(msg)
    if args.config:
        config = config_mod.TrainConfig.from_toml(args.config)
        name = Path(args.config).stem
    else:
        config = config_mod.load_preset(args.preset)
        name = args.preset
    overrides = config_mod.parse_overrides(args.overrides)  # a bad --set fails here
    for flag, section, key in (("--seed", "run", "seed"), ("--epochs", "optim", "epochs")):
        if getattr(args, flag[2:]) is not None and key in overrides.get(section, {}):
            msg = f"{flag} and --set {section}.{key} set the same thing; use one of them"
            raise ValueError(msg)
    if args.seeds is not None and "seed" in overrides.get("run", {}):
        msg = "--set run.seed and --seeds exclude each other; list every seed in --seeds"
        raise ValueError(msg)
    config = config.with_overrides(args.overrides)
    changes = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    config = config.replace(**changes)
    out = args.out or f"runs/{name}"
    if args.seeds is not None:
        return _run_train_seeds(args, config, out)
    if args.seeds_per_block is not None or args.dask is not None or args.workers is not None:
        msg = "--seeds-per-block, --dask and --workers go with --seeds"
        raise ValueError(msg)
    result = training.run_training(
        config,
        args.train_data,
        args.test_data,
        out_dir=out,
        max_restarts=args.restarts,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
        allow_data_change=args.allow_data_change,
    )
    if result.trials:
        print(
            f"train: {len(result.trials)} attempt(s), {result.restarts} restart(s); "
            f"see {Path(out) / 'ensemble.json'}"
        )
    print_splits("train", result.splits(), result.over_regularized, result.out_dir)
    return 0


def _run_train_seeds(args: argparse.Namespace, config, out: str) -> int:
    """``darcyvae train --seeds``: the library's ``train_ensemble``, its members printed."""

    from ..ensemble import parse_seeds, train_ensemble

    if args.seed is not None:
        msg = "--seed and --seeds exclude each other; list every seed in --seeds"
        raise ValueError(msg)
    result = train_ensemble(
        config,
        parse_seeds(args.seeds),
        args.train_data,
        args.test_data,
        out_dir=out,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
        seeds_per_block=args.seeds_per_block,
        dask=args.dask,
        workers=args.workers,
        max_restarts=args.restarts,
        allow_data_change=args.allow_data_change,
    )
    for m in result.members:
        if m.status == "done":
            print_splits(f"seed {m.seed}", m.splits(), m.over_regularized, m.out_dir)
        else:
            print(m.message)
    restarts = sum(m.restarts for m in result.members)
    diverged = [m.seed for m in result.members if m.status == "diverged"]
    n = len(result.members)
    print(
        f"train: {n} seeds: {n - len(diverged)} finished, {len(diverged)} diverged, "
        f"{restarts} restart(s); see {Path(out) / 'ensemble.json'}"
    )
    if len(diverged) == n:  # as the same seed alone: TrainingDivergedError, exit 2
        from ..errors import TrainingDivergedError

        msg = (
            f"every member diverged (non-finite loss; seeds {_seed_list(diverged)}); "
            "no model finished: lower the learning rate or change the seeds."
        )
        raise TrainingDivergedError(msg)
    if diverged:
        print(
            f"darcyvae train: {len(diverged)} of {n} members diverged (seeds "
            f"{_seed_list(diverged)}); the others finished (exit code 1)",
            file=sys.stderr,
        )
        return 1
    return 0


def _seed_list(seeds: list[int], most: int = 10) -> str:
    """``0, 1, 2`` (at most ``most`` seeds, then ``... (N in all)``)."""
    text = ", ".join(str(s) for s in seeds[:most])
    return text + (f", ... ({len(seeds)} in all)" if len(seeds) > most else "")
