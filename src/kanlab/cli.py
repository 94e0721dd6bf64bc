"""The ``kanlab`` command line. Nothing else in the package imports this module."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import torch

    from .demo import run_demo

    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    run_demo(steps=args.steps, grid=args.grid, refine_to=args.refine, lamb=args.lamb, seed=args.seed,
             dtype=dtype, out_dir=args.output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kanlab", description="Kolmogorov-Arnold Networks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="the paper's workflow on exp(sin(pi x) + y^2): train, prune, refine, snap, formula",
    )
    demo.add_argument("--steps", type=int, default=50, help="LBFGS steps per stage (default 50)")
    demo.add_argument("--grid", type=int, default=5, help="initial grid intervals (default 5)")
    demo.add_argument("--refine", type=int, default=10, help="grid after refinement (default 10)")
    demo.add_argument("--lamb", type=float, default=1e-3, help="sparsification strength (default 1e-3)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    demo.add_argument("-o", "--output", default=".", help="directory for kan.png and model.kan (default .)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"kanlab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
