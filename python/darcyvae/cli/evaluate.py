"""``darcyvae evaluate``."""

from __future__ import annotations

import argparse

from ._common import check_out, print_splits, set_threads


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="rate, distortion, S_D and figures of a trained VAE")
    p.add_argument("checkpoint", help="checkpoint.pt written by 'darcyvae train' (or its folder)")
    p.add_argument("data", help="test data (HDF5)")
    p.add_argument("--out", required=True, help="output folder for results.json and figures")
    p.add_argument(
        "--train",
        dest="train_data",
        default=None,
        help="training data (default: the file recorded in the checkpoint, when it exists)",
    )
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda (default: cpu)")
    p.add_argument(
        "--samples", type=int, default=1, help="latent samples per data sample (default: 1)"
    )
    p.add_argument(
        "--skl-latent",
        choices=("sample", "mean"),
        default="sample",
        help="S_KL on one z ~ q(z|y) per sample (default) or on the encoder means",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the latent draws and figures (default: 0)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads, at most darcyvae.darcy.MAX_THREADS (default: torch's choice)",
    )
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .. import evaluation

    check_out(args.out)
    set_threads(args.threads, "evaluate")
    result = evaluation.evaluate(
        args.checkpoint,
        args.data,
        train_data=args.train_data,
        recorded_train=True,
        out_dir=args.out,
        n_latent_samples=args.samples,
        device=args.device,
        seed=args.seed,
        skl_latent=args.skl_latent,
    )
    print_splits("evaluate", result.splits(), result.over_regularized, args.out)
    return 0
