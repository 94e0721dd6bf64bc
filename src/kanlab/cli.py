"""The ``kanlab`` command line. Nothing else in the package imports this module."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import torch

    from .demo import run_demo

    grids = tuple(int(g) for g in args.grids.split(","))
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    model = run_demo(grids=grids, steps=args.steps, seed=args.seed, dtype=dtype)
    if args.output:
        model.save(args.output)
        print(f"saved the model to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kanlab", description="Kolmogorov-Arnold Networks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a KAN on exp(sin(pi x) + y^2) with grid extension")
    demo.add_argument("--grids", default="5,10,20,50", help="grid sizes, comma separated (default 5,10,20,50)")
    demo.add_argument("--steps", type=int, default=50, help="LBFGS steps per grid (default 50)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    demo.add_argument("-o", "--output", help="save the final model here")
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
