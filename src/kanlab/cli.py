"""The ``kanlab`` command line. Nothing else in the package imports this module.

Commands: ``fit`` (a CSV to a model, a picture, a JSON report and the formula), ``predict``,
``formula``, ``plot``, ``info`` and ``demo``. Every error is one line on stderr and exit
status 2; nothing that exists is overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("kanlab")


class CommandError(ValueError):
    """A problem with the command's arguments or files (printed as one line, exit status 2)."""


def _say(text: str) -> None:
    print(text, flush=True)


def _parse_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CommandError(f"{option} must be comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise CommandError(f"{option} must be comma-separated positive integers, got {text!r}")
    return values


def _check_free(paths, force: bool) -> None:
    """Refuse to overwrite existing files unless ``force``."""
    for path in paths:
        if Path(path).exists() and not force:
            raise CommandError(f"{str(path)!r} already exists; pass --force to overwrite it")
        if not Path(path).parent.is_dir():
            raise CommandError(f"the directory of {str(path)!r} does not exist")


def _load_model(path):
    from .io import ModelFileError, load

    try:
        return load(path)
    except FileNotFoundError:
        raise CommandError(f"model file {str(path)!r} does not exist") from None
    except ModelFileError as error:
        raise CommandError(str(error)) from None


def _columns(model) -> tuple[list[str], list[str]]:
    """Input and output names stored by ``kanlab fit`` (else x_1.., y_1..)."""
    meta = model.metadata
    features = meta.get("features") or [f"x_{i + 1}" for i in range(model.n_inputs)]
    targets = meta.get("targets") or [f"y_{j + 1}" for j in range(model.width_in[-1])]
    return list(features), list(targets)


def _scalings(model):
    from .scaling import AffineScaling

    meta = model.metadata
    x = AffineScaling.from_dict(meta["x_scaling"]) if "x_scaling" in meta else None
    y = AffineScaling.from_dict(meta["y_scaling"]) if "y_scaling" in meta else None
    return x, y


def _formula(model, digits: int | None):
    """The formula in the data's units, or None while some edge is still a spline."""
    import numpy as np

    from .scaling import AffineScaling, formula_in_units

    features, _ = _columns(model)
    x_scaling, y_scaling = _scalings(model)
    if x_scaling is None:
        x_scaling = AffineScaling(offset=np.zeros(len(features)), scale=np.ones(len(features)))
    try:
        return formula_in_units(model, features, x_scaling, y_scaling, digits)
    except ValueError:
        return None


def _split(n_rows: int, seed: int, val_fraction: float):
    """``kanlab fit``'s training and validation rows (the same for the same seed and fraction)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n_rows)
    n_val = max(1, int(round(val_fraction * n_rows)))
    return order[n_val:], order[:n_val]


def _scaled_rows(table, rows, x_scaling, y_scaling, dtype):
    """The table's ``rows`` as ``(X, y)`` tensors in the model's scaled units."""
    import torch

    X = torch.as_tensor(x_scaling.forward(table.X[rows]), dtype=dtype)
    y = torch.as_tensor(y_scaling.forward(table.y[rows, None]), dtype=dtype)
    return X, y


# ---------------------------------------------------------------------- fit
def _fit(args: argparse.Namespace) -> int:
    import torch

    from . import plot
    from .model import KAN
    from .scaling import AffineScaling
    from .tabular import MIN_ROWS, read_table

    output = Path(args.output)
    picture, report_path = output.with_suffix(".png"), output.with_suffix(".json")
    _check_free([output, picture, report_path], args.force)
    main_process = True
    if args.ddp:  # one process of `torchrun --nproc_per_node=N -m kanlab fit ... --ddp`
        import os

        from . import distributed

        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise CommandError("--ddp runs under torchrun: torchrun --nproc_per_node=N -m kanlab fit ... --ddp")

        rank, _ = distributed.init()
        main_process = rank == 0
    say = _say if main_process else (lambda text: None)
    hidden = _parse_ints(args.width, "--width")
    grids = _parse_ints(args.grid, "--grid")
    features = [c.strip() for c in args.features.split(",")] if args.features else None
    if not 0 < args.val_fraction < 1:
        raise CommandError(f"--val-fraction must lie in (0, 1), got {args.val_fraction}")
    table = read_table(args.data, target=args.target, features=features, dropna=args.dropna, min_rows=MIN_ROWS)
    if table.dropped:
        say(f"dropped {table.dropped} row(s) with empty or NaN cells")

    train_rows, val_rows = _split(table.X.shape[0], args.seed, args.val_fraction)
    x_scaling = AffineScaling.to_range(table.X[train_rows])
    y_scaling = AffineScaling.standard(table.y[train_rows, None])
    dtype = torch.float64

    train, val = (_scaled_rows(table, rows, x_scaling, y_scaling, dtype) for rows in (train_rows, val_rows))
    data = {"train_input": train[0], "train_label": train[1], "test_input": val[0], "test_label": val[1]}
    scale = float(y_scaling.scale[0])
    stages = []

    def record(name, model, seconds):
        with torch.no_grad():
            rmse = [math.sqrt(torch.mean((model(x) - y) ** 2).item()) * scale for x, y in (train, val)]
        stages.append({"stage": name, "width": model.width_in, "train_rmse": rmse[0], "val_rmse": rmse[1],
                       "seconds": round(seconds, 3)})
        say(f"{name:<16} width {model.width_in}  train RMSE {rmse[0]:.4g}  validation RMSE {rmse[1]:.4g}  ({seconds:.1f} s)")

    def train_stage(model, lamb=0.0, steps=args.steps):
        begin = time.perf_counter()
        model.fit(data, opt="LBFGS", steps=steps, lamb=lamb, log=steps, progress=args.progress if main_process else False,
                  distributed=args.ddp)
        return time.perf_counter() - begin

    say(f"{len(train_rows)} training and {len(val_rows)} validation rows; features {', '.join(table.features)}; "
         f"target {table.target}")
    model = KAN([len(table.features), *hidden, 1], grid=grids[0], k=3, seed=args.seed, dtype=dtype)
    lamb = args.lamb if args.lamb is not None else (1e-3 if args.symbolic else 0.0)
    record(f"train grid {grids[0]}", model, train_stage(model, lamb))
    if args.symbolic:
        begin = time.perf_counter()
        model = model.prune()
        record("prune", model, time.perf_counter() - begin)
        record(f"train grid {grids[0]}", model, train_stage(model))
    best = (stages[-1]["val_rmse"], grids[0], model)
    for grid in grids[1:]:
        begin = time.perf_counter()
        model = model.refine(grid)
        record(f"train grid {grid}", model, time.perf_counter() - begin + train_stage(model))
        if stages[-1]["val_rmse"] < best[0]:
            best = (stages[-1]["val_rmse"], grid, model)
    kept_grid = best[1]
    if best[2] is not model:
        model = best[2]
        say(f"kept grid {kept_grid}: its validation RMSE {best[0]:.4g} is the lowest of the grid stages "
            f"(finer grids fit the training rows more closely but the validation rows less)")
    formula = None
    if args.symbolic:
        begin = time.perf_counter()
        model.auto_symbolic()
        record("auto_symbolic", model, time.perf_counter() - begin)
        record("train symbolic", model, train_stage(model))
    model.metadata = {
        "features": table.features,
        "targets": [table.target],
        "x_scaling": x_scaling.to_dict(),
        "y_scaling": y_scaling.to_dict(),
        "source": str(Path(args.data).resolve()),
        "split": {"seed": args.seed, "val_fraction": args.val_fraction, "dropna": args.dropna},
    }
    if args.symbolic:
        formulas = _formula(model, 4)
        formula = str(formulas[0]) if formulas else None
        say(f"formula: {table.target} = {formula}")
    if not main_process:
        return 0
    model.save(output)
    plot.draw(model, picture, in_vars=table.features, out_vars=[table.target])
    report = {
        "data": str(args.data), "target": table.target, "features": table.features,
        "rows": {"train": int(len(train_rows)), "validation": int(len(val_rows)), "dropped": table.dropped},
        "width": model.width_in, "grid": model.grid, "kept_grid": kept_grid, "stages": stages, "formula": formula,
        "model": str(output), "picture": str(picture),
    }
    from .io import write_atomically

    write_atomically(report_path, lambda stream: stream.write(json.dumps(report, indent=2).encode()))
    say(f"wrote {output}, {picture} and {report_path}")
    return 0


# ---------------------------------------------------------------------- the other commands
def _predict(args: argparse.Namespace) -> int:
    import torch

    from .tabular import read_table

    if args.output:
        _check_free([args.output], args.force)
    model = _load_model(args.model)
    features, targets = _columns(model)
    if "features" not in model.metadata:  # saved from Python: take the file's columns in order
        table = read_table(args.data, dropna=args.dropna)
        if len(table.features) != model.n_inputs:
            raise CommandError(
                f"{args.model!r} has no column names (saved from Python) and takes {model.n_inputs} inputs, "
                f"but {args.data!r} has {len(table.features)} columns"
            )
    else:
        table = read_table(args.data, features=features, dropna=args.dropna)
    x_scaling, y_scaling = _scalings(model)
    X = x_scaling.forward(table.X) if x_scaling is not None else table.X
    with torch.no_grad():
        pred = model(torch.as_tensor(X, dtype=model.dtype)).double().numpy()
    if y_scaling is not None:
        pred = y_scaling.inverse(pred)
    frame = table.frame.copy()
    for j, name in enumerate(targets):
        frame[f"{name}_predicted"] = pred[:, j]
    if args.output:
        from .io import write_atomically

        text = frame.to_csv(index=False)
        write_atomically(args.output, lambda stream: stream.write(text.encode()))
        _say(f"wrote {len(frame)} predictions to {args.output}")
    else:
        frame.to_csv(sys.stdout, index=False)
    return 0


def _formula_command(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    digits = None if args.digits < 0 else args.digits
    formulas = _formula(model, digits)
    note = None
    if formulas is None:
        formulas, note = _snapped_formula(model, args, digits)
    _, targets = _columns(model)
    if args.latex:
        from .export import to_latex

        for name, expr in zip(targets, formulas):
            _say(f"{name} = {to_latex(expr)}")
    else:
        for name, expr in zip(targets, formulas):
            _say(f"{name} = {expr}")
    if note:
        _say(note)
    return 0


def _snapped_formula(model, args: argparse.Namespace, digits):
    """The formula of a model with spline edges: a copy snapped with the default library
    (``auto_symbolic``), its constants trained on the model's training rows, and a line giving
    the formula's validation RMSE beside the model's. The rows come from ``--data`` or the CSV
    that ``kanlab fit`` recorded; without either, the copy is fit to the model's own predictions
    on the sample of inputs it keeps, and the RMSE is against those."""
    import torch

    train, val, where = _formula_data(model, args)
    snapped = model.copy()
    with torch.no_grad():
        reference = [model(x) for x, _ in (train, val)]
    if train[1] is None:  # no labels: the model's own predictions are the target
        train, val = (train[0], reference[0]), (val[0], reference[1])
    snapped.auto_symbolic()
    data = {"train_input": train[0], "train_label": train[1]}
    snapped.fit(data, opt="LBFGS", steps=args.steps, update_grid=False, progress=False)
    formulas = _formula(snapped, digits)
    if formulas is None:  # every edge was snapped, so this does not happen; kept as a guard
        raise CommandError(f"{args.model!r}: some edges could not be snapped to the library")
    _, y_scaling = _scalings(model)
    scale = float(y_scaling.scale[0]) if y_scaling is not None else 1.0
    with torch.no_grad():
        rmse_formula = torch.sqrt(torch.mean((snapped(val[0]) - val[1]) ** 2)).item() * scale
        rmse_model = torch.sqrt(torch.mean((reference[1] - val[1]) ** 2)).item() * scale
    note = (f"{where} RMSE: formula {rmse_formula:.4g}, model {rmse_model:.4g} (a copy of the model snapped to the "
            f"default library, its constants trained {args.steps} LBFGS steps; {args.model} is unchanged)")
    return formulas, note


def _formula_data(model, args: argparse.Namespace):
    """``(train, validation, what the RMSE is measured on)`` in the model's scaled units; the
    labels are None when no data is at hand."""
    import torch

    from .tabular import read_table

    meta = model.metadata
    source = args.data or meta.get("source")
    if source is None or not Path(source).is_file() or "targets" not in meta:
        if args.data:
            raise CommandError(f"data file {str(args.data)!r} does not exist" if not Path(args.data).is_file() else
                               f"{args.model!r} was not written by `kanlab fit`, so the columns of {args.data!r} "
                               "are unknown")
        sample = model.sample_input
        if sample is None:
            raise CommandError(f"{args.model!r} has spline edges and no data to snap them on: pass --data CSV")
        return (sample, None), (sample, None), "against the model's own predictions on its kept inputs:"
    features, targets = _columns(model)
    split = meta.get("split", {})
    table = read_table(source, target=targets[0], features=features, dropna=split.get("dropna", False))
    x_scaling, y_scaling = _scalings(model)

    def tensors(rows):
        return _scaled_rows(table, rows, x_scaling, y_scaling, model.dtype)

    if args.data is None and split:
        train_rows, val_rows = _split(table.X.shape[0], split["seed"], split["val_fraction"])
        return tensors(train_rows), tensors(val_rows), "validation"
    rows = list(range(table.X.shape[0]))  # another file: fit and measure on all of it
    return tensors(rows), tensors(rows), f"{Path(source).name}"


def _plot(args: argparse.Namespace) -> int:
    from . import plot

    _check_free([args.output], args.force)
    model = _load_model(args.model)
    features, targets = _columns(model)
    plot.draw(model, args.output, in_vars=features, out_vars=targets)
    _say(f"wrote {args.output}")
    return 0


def _info(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    features, targets = _columns(model)
    n_symbolic = sum(len(layer.symbolic_edges) for layer in model.layers)
    n_edges = sum(int(layer.mask.sum().item()) for layer in model.layers)
    n_parameters = sum(p.numel() for p in model.parameters())
    _say(f"model     {args.model}")
    _say(f"width     {model.width_in}")
    _say(f"grid      {model.grid} intervals, degree k = {model.k}, {str(model.dtype).replace('torch.', '')}")
    _say(f"edges     {n_edges} active, {n_symbolic} symbolic; {n_parameters} parameters")
    _say(f"inputs    {', '.join(features)}")
    _say(f"outputs   {', '.join(targets)}")
    formulas = _formula(model, 4) if n_symbolic else None
    if formulas is not None:
        for name, expr in zip(targets, formulas):
            _say(f"formula   {name} = {expr}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from . import experiments

    if args.name not in experiments.NAMES:
        raise CommandError(f"unknown experiment {args.name!r}; choose one of {', '.join(experiments.NAMES)}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {str(out)!r} exists and is not a directory")
    _check_free([out / f"{args.name}.{suffix}" for suffix in ("md", "csv", "png")] if out.is_dir() else [], args.force)
    result = experiments.run(args.name, quick=args.quick, out=out, seed=args.seed)
    _say(result.markdown())
    _say(f"wrote {args.name}.md, {args.name}.csv and {args.name}.png into {out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import torch

    from .demo import run_demo

    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    run_demo(steps=args.steps, grid=args.grid, refine_to=args.refine, lamb=args.lamb, seed=args.seed,
             dtype=dtype, out_dir=args.output)
    return 0


# ---------------------------------------------------------------------- discover
def _discover(args: argparse.Namespace) -> int:
    from .discover import discover
    from .io import write_atomically
    from .tabular import read_table

    report_path = Path(args.report)
    _check_free([report_path], args.force)
    features = [c.strip() for c in args.features.split(",")] if args.features else None
    table = read_table(args.data, target=args.target, features=features, dropna=args.dropna, min_rows=20)
    result = discover(table.X, table.y, table.features, budget=args.budget, seed=args.seed, progress=args.progress)
    print(result.table())
    print()
    kind = "exact" if result.exact else "best by accuracy and simplicity"
    print(f"{args.target} = {result.formula}    ({kind}; {result.tried} formulas tried in {result.seconds:.1f} s)")
    report = {"data": str(Path(args.data).resolve()), "target": args.target, "budget": args.budget,
              "seed": args.seed, **result.to_dict()}
    write_atomically(report_path, lambda stream: stream.write(json.dumps(report, indent=2).encode()))
    _say(f"report: {report_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kanlab", description="Kolmogorov-Arnold Networks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--compiled", action="store_true",
                        help="make sure kanlab's compiled CPU kernel is in use: the installed one, or else built for "
                             "this machine (minutes; needs g++ and ninja). Installed kernels load by themselves")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="train a KAN on a CSV file; write the model, its picture and a report")
    fit.add_argument("data", help="CSV file with a header row")
    fit.add_argument("--target", required=True, help="the column to predict")
    fit.add_argument("--features", help="comma-separated input columns (default: all others)")
    fit.add_argument("--width", default="5", help="hidden layer widths, comma-separated (default 5)")
    fit.add_argument("--grid", default="5,10,20", help="grid intervals per stage: grid extension (default 5,10,20)")
    fit.add_argument("--steps", type=int, default=50, help="LBFGS steps per stage (default 50)")
    fit.add_argument("--symbolic", action="store_true", help="sparsify, prune, snap edges to formulas")
    fit.add_argument("--lamb", type=float, help="sparsification strength (default 1e-3 with --symbolic, else 0)")
    fit.add_argument("--val-fraction", type=float, default=0.2, help="share of rows held out (default 0.2)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--dropna", action="store_true", help="drop rows with empty or NaN cells instead of failing")
    fit.add_argument("--force", action="store_true", help="overwrite existing output files")
    fit.add_argument("-o", "--output", default="model.kan", help="model file; the .png and .json go beside it")
    fit.add_argument("--ddp", action="store_true",
                     help="train across the processes of `torchrun --nproc_per_node=N -m kanlab fit ...` (torch DDP)")
    fit.set_defaults(handler=_fit)

    predict = commands.add_parser("predict", help="predict with a model on a CSV file")
    predict.add_argument("model")
    predict.add_argument("data")
    predict.add_argument("-o", "--output", help="CSV to write (default: standard output)")
    predict.add_argument("--dropna", action="store_true", help="drop rows with empty or NaN cells")
    predict.add_argument("--force", action="store_true", help="overwrite an existing output file")
    predict.set_defaults(handler=_predict)

    formula = commands.add_parser(
        "formula", help="print a model's formula (a model with spline edges: a snapped copy, with its RMSE)")
    formula.add_argument("model")
    formula.add_argument("--data", help="CSV to snap and measure on (default: the one `kanlab fit` trained on)")
    formula.add_argument("--steps", type=int, default=50,
                         help="LBFGS steps training a snapped copy's constants (default 50)")
    formula.add_argument("--latex", action="store_true", help="print LaTeX")
    formula.add_argument("--digits", type=int, default=4, help="round numbers to this many digits (-1: exact)")
    formula.set_defaults(handler=_formula_command)

    find = commands.add_parser("discover", help="find a formula for a CSV column: print the Pareto front, write a "
                                                "JSON report")
    find.add_argument("data", help="CSV file with a header row")
    find.add_argument("--target", required=True, help="the column the formula gives")
    find.add_argument("--features", help="comma-separated input columns (default: all others)")
    find.add_argument("--budget", type=float, default=60.0, help="seconds of wall clock (default 60)")
    find.add_argument("--seed", type=int, default=0)
    find.add_argument("--dropna", action="store_true", help="drop rows with empty or NaN cells instead of failing")
    find.add_argument("--report", default="discovery.json", help="JSON report to write (default discovery.json)")
    find.add_argument("--force", action="store_true", help="overwrite an existing report")
    find.set_defaults(handler=_discover)

    draw = commands.add_parser("plot", help="draw a model")
    draw.add_argument("model")
    draw.add_argument("-o", "--output", default="kan.png")
    draw.add_argument("--force", action="store_true", help="overwrite an existing picture")
    draw.set_defaults(handler=_plot)

    info = commands.add_parser("info", help="describe a model file")
    info.add_argument("model")
    info.set_defaults(handler=_info)

    reproduce = commands.add_parser("reproduce", help="run one of the paper's experiments (tables, CSV, plot)")
    reproduce.add_argument("name", help="scaling, grid_extension, special, feynman, poisson, continual, symbolic or noise")
    reproduce.add_argument("--quick", action="store_true", help="a small smoke run (seconds) instead of the full one")
    reproduce.add_argument("--out", default="results", help="directory for NAME.md, NAME.csv, NAME.png (default results)")
    reproduce.add_argument("--seed", type=int, default=0)
    reproduce.add_argument("--force", action="store_true", help="overwrite earlier results in --out")
    reproduce.set_defaults(handler=_reproduce)

    demo = commands.add_parser(
        "demo",
        help="the paper's workflow on exp(sin(pi x) + y^2): train, prune, refine, snap, formula",
    )
    demo.add_argument("--steps", type=int, default=50, help="LBFGS steps per stage (default 50)")
    demo.add_argument("--grid", type=int, default=5, help="initial grid intervals (default 5)")
    demo.add_argument("--refine", type=int, default=10, help="grid after refinement (default 10)")
    demo.add_argument("--lamb", type=float, default=3e-3, help="sparsification strength (default 3e-3)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    demo.add_argument("-o", "--output", default=".", help="directory for kan.png and model.kan (default .)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    # a progress bar on a terminal, nothing on a pipe
    args.progress = None
    if args.compiled:
        from . import native

        if not native.load():
            print("kanlab: the compiled kernel could not be built; going on with the torch path", file=sys.stderr)
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"kanlab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
