"""``darcyvae generate``."""

from __future__ import annotations

import argparse

from ._common import check_out


def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate a Darcy flow dataset (train.h5 and test.h5)",
        description="Draw thetas from p(theta), build K = exp(KLE field) and solve Darcy flow; "
        "write OUT/train.h5 and OUT/test.h5 (docs/data.md §1c layout). Settings and thetas are checked "
        "before any file is written; OUT is locked while the run lasts. Resumable (finished "
        "files are verified against their checksums); Dask optional.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kle", type=int, default=100, metavar="S", help="KLE modes s (default: 100)")
    p.add_argument("--grid", type=int, default=65, metavar="N", help="grid size N (default: 65)")
    p.add_argument(
        "--kernel",
        default="exponential",
        help="KLE covariance kernel: exponential (the paper's) or squared_exponential "
        "(default: exponential)",
    )
    p.add_argument(
        "--length-scale",
        type=float,
        nargs="+",
        default=[0.1],
        metavar="L",
        help="KLE correlation length: one value, or two (lx ly) (default: 0.1)",
    )
    p.add_argument(
        "--variance", type=float, default=1.0, help="KLE field variance sigma^2 (default: 1)"
    )
    p.add_argument(
        "--dist",
        default="normal",
        help="p(theta): normal, gaussian, mixture4, uniform or array (default: normal)",
    )
    for name, what in (
        ("mean", "gaussian mean, 1 or s values (default: 1)"),
        ("sd", "gaussian standard deviations, 1 or s values (default: 0.5)"),
        ("low", "uniform lower bounds, 1 or s values"),
        ("high", "uniform upper bounds, 1 or s values"),
    ):
        p.add_argument(f"--{name}", type=float, nargs="+", default=None, help=what)
    p.add_argument("--loc", type=float, default=None, help="mixture4 mode distance (default: 1)")
    p.add_argument("--scale", type=float, default=None, help="mixture4 mode sd (default: 0.25)")
    p.add_argument("--theta-file", default=None, help="thetas for --dist array (.npy or text)")
    p.add_argument(
        "--n-train", type=int, default=512, help="training samples, train.h5 (default: 512)"
    )
    p.add_argument(
        "--n-test", type=int, default=512, help="test samples, test.h5; 0: none (default: 512)"
    )
    p.add_argument("--scheme", default="fd", help="Darcy scheme: fd (paper) or fv (default: fd)")
    p.add_argument(
        "--well-width",
        type=float,
        default=0.125,
        help="side of the square wells at (0, 0) and (1, 1) (default: 0.125)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="injection rate r: +r in the well at (0, 0), -r at (1, 1) (default: 10)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the thetas of both splits (default: 0)"
    )
    for split, paper in (("train", "the authors' training sets are lhs"), ("test", "")):
        p.add_argument(
            f"--{split}-sampling",
            choices=("mc", "lhs"),
            default="mc",
            help=f"{split} thetas: Monte Carlo or Latin hypercube"
            + (f"; {paper}" if paper else "")
            + " (default: mc)",
        )
    p.add_argument("--chunk-size", type=int, default=256, help="samples per chunk (default: 256)")
    p.add_argument(
        "--compression",
        choices=("gzip", "lzf", "none"),
        default="none",
        help="HDF5 compression of the datasets (default: none)",
    )
    p.add_argument("--compression-level", type=int, default=4, help="gzip level 0-9 (default: 4)")
    p.add_argument("--threads", type=int, default=None, help="solver threads (default: all)")
    p.add_argument("--dask", default=None, metavar="ADDRESS", help="Dask scheduler address")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run (finished files are verified against their checksums)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="remove existing outputs of both splits first (also a split not written now)",
    )
    p.add_argument(
        "--no-space-check",
        action="store_true",
        help="skip the check that the files fit in the free space of --out's disk "
        "(for storage that does not report it, e.g. a remote mount)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    import os

    # The KLE product per chunk is small; OpenBLAS's worker threads spin after
    # each call and take ~30% of the CPU from the solver threads. Single-threaded
    # BLAS unless the user chose otherwise (effective before numpy is imported).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    check_out(args.out)
    from ..darcy import DarcyConfig
    from ..generate import GenerateConfig, generate_dataset
    from ..kle import KLEConfig

    ls = args.length_scale
    kle = KLEConfig(
        grid=args.grid,
        n_modes=args.kle,
        kernel=args.kernel,
        length_scale=ls[0] if len(ls) == 1 else tuple(ls),
        variance=args.variance,
    )
    darcy = DarcyConfig(scheme=args.scheme, well_width=args.well_width, rate=args.rate)
    params = {
        k: (v[0] if isinstance(v, list) and len(v) == 1 else v)
        for k in ("mean", "sd", "low", "high", "loc", "scale")
        if (v := getattr(args, k)) is not None
    }
    if args.theta_file is not None:
        import numpy as np

        path = args.theta_file
        params["theta"] = np.load(path) if path.endswith(".npy") else np.loadtxt(path, ndmin=2)
    config = GenerateConfig(
        kle,
        darcy,
        distribution=args.dist,
        dist_params=params,
        n_train=args.n_train,
        n_test=args.n_test,
        seed=args.seed,
        chunk_size=args.chunk_size,
        compression=None if args.compression == "none" else args.compression,
        compression_level=args.compression_level,
        threads=args.threads,
        train_sampling=args.train_sampling,
        test_sampling=args.test_sampling,
    )
    # another run holds the folder, a damaged output, a full disk, no 'distributed'
    # (MissingDependencyError): main() prints the library's message as one line
    paths = generate_dataset(
        config,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        dask_address=args.dask,
        progress=not args.no_progress,
        space_check=not args.no_space_check,
    )
    for split, path in paths.items():
        print(f"{split}: {path} ({config.n_samples(split)} samples)")
    return 0
