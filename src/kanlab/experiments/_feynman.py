"""Paper Table 2: the dimensionless Feynman equations: train, prune, snap, and check the formula.

Equations, variables and input ranges come from ``data/feynman_dimensionless.csv``. Per
equation: KAN [n, 5, 1] trained with sparsification, pruned, trained, refined to a finer grid
and trained again (the paper's workflow); then ``auto_symbolic`` and a last training. The
formula counts as recovered when it matches the true one on 1000 fresh points to a relative
RMSE below 1e-3 ("numeric"), and as "exact" when sympy also proves the rounded formula equal.
MLPs get the same data, optimizer and total steps, with a small size search.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import torch

from ..datasets import create_dataset
from ..model import KAN
from .common import Result, Timer, formula_verdict, train_mlp

DATA = Path(__file__).parent / "data" / "feynman_dimensionless.csv"


def table() -> list[dict]:
    with open(DATA, newline="") as stream:
        return list(csv.DictReader(stream))


def _plain(text: str) -> str:
    """The table's notation as sympy input: drop trailing [notes], ``sin^2(u)`` -> ``(sin(u))^2``,
    ``arcsin`` -> ``asin``, ``ln`` -> ``log``."""
    text = re.sub(r"\s*\[.*\]\s*$", "", text).replace("arcsin", "asin")
    text = re.sub(r"\bln\(", "log(", text)
    while (match := re.search(r"\b(sin|cos|tan)\^(\d+)\(", text)) is not None:
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        inner = text[match.end() : end]
        text = text[: match.start()] + f"({match.group(1)}({inner}))^{match.group(2)}" + text[end + 1 :]
    return text


def equation(row: dict):
    """(sympy expression, its symbols in column order, torch function of (N, n) inputs)."""
    import sympy

    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                            standard_transformations)

    symbols = sympy.symbols(row["variables"])
    symbols = list(symbols) if isinstance(symbols, (tuple, list)) else [symbols]
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    expr = parse_expr(_plain(row["dimensionless_formula"]), local_dict={s.name: s for s in symbols},
                      transformations=transformations)
    numeric = sympy.lambdify(symbols, expr, "numpy")

    def target(x: torch.Tensor) -> torch.Tensor:
        values = numeric(*[x[:, i].numpy() for i in range(x.shape[1])])
        values = torch.as_tensor(values, dtype=x.dtype)
        return values.expand(x.shape[0]).unsqueeze(1) if values.dim() <= 1 else values

    return expr, symbols, target


def _recovered(model, expr, symbols, target, ranges, seed) -> str:
    """The formula check of ``common.formula_verdict`` on 1000 fresh points, or "no formula"."""
    from ..formula import symbolic_formula

    try:
        (found,) = symbolic_formula(model, [s.name for s in symbols])
    except ValueError:
        return "no formula"
    check = create_dataset(target, n_var=len(symbols), ranges=ranges, train_num=1000, test_num=1, seed=seed + 7,
                           dtype=torch.float64)
    return formula_verdict(found, symbols, check["train_input"], check["train_label"], expr, digits=4)


FULL = dict(names=None, grids=(5, 10), steps=30, lamb=1e-3, train_num=1000, mlp=([0, 20, 1], [0, 50, 50, 1], [0, 100, 100, 1]))
QUICK = dict(names=("II.38.3",), grids=(3,), steps=5, lamb=1e-3, train_num=200, mlp=([0, 20, 1],))


def run(quick: bool = False, seed: int = 0) -> Result:
    setting = QUICK if quick else FULL
    rows = [row for row in table() if setting["names"] is None or row["equation"] in setting["names"]]
    result = Result("feynman", "Feynman equations (paper Table 2): prune, snap, and check the formula",
                    ["equation", "formula", "pruned shape", "unpruned KAN RMSE", "pruned KAN RMSE", "best MLP RMSE",
                     "recovered", "paper pruned shape", "paper pruned RMSE", "paper MLP RMSE"])
    counts = {"exact": 0, "numeric": 0}
    with Timer() as total:
        for row in rows:
            expr, symbols, target = equation(row)
            n = len(symbols)
            ranges = json.loads(row["ranges"])
            data = create_dataset(target, n_var=n, ranges=ranges, train_num=setting["train_num"], test_num=1000,
                                  seed=seed, dtype=torch.float64)
            steps = setting["steps"]
            model = KAN([n, 5, 1], grid=setting["grids"][0], seed=seed, dtype=torch.float64)
            history = model.fit(data, opt="LBFGS", steps=steps, lamb=setting["lamb"], log=steps, progress=False)
            unpruned = history["test_loss"][-1]
            model = model.prune()
            for index, grid in enumerate(setting["grids"]):
                if index:
                    model = model.refine(grid)
                history = model.fit(data, opt="LBFGS", steps=steps, log=steps, progress=False)
            pruned = history["test_loss"][-1]
            shape = [w[0] for w in model.width]
            model.auto_symbolic()
            model.fit(data, opt="LBFGS", steps=steps, log=steps, progress=False, update_grid=False)
            verdict = _recovered(model, expr, symbols, target, ranges, seed)
            counts["exact"] += verdict == "exact"
            counts["numeric"] += verdict.startswith(("exact", "numeric"))
            budget = steps * (1 + len(setting["grids"]))
            mlp = min(train_mlp([n, *s[1:]], data, steps=budget, seed=seed)[1] for s in setting["mlp"])
            result.rows.append([row["equation"], row["dimensionless_formula"], str(shape), unpruned, pruned, mlp,
                                verdict, row["paper_pruned_min_shape"], float(row["paper_rmse_pruned"]),
                                float(row["paper_rmse_mlp"])])
    result.seconds = total.seconds

    def draw(figure):
        import numpy as np

        ax = figure.add_subplot(1, 1, 1)
        names = [row[0] for row in result.rows]
        positions = np.arange(len(names))
        for offset, column, label in ((-0.27, 3, "KAN unpruned"), (0.0, 4, "KAN pruned"), (0.27, 5, "best MLP")):
            ax.bar(positions + offset, [row[column] for row in result.rows], 0.27, label=label)
        ax.set_yscale("log")
        ax.set_xticks(positions, names, rotation=60, fontsize=7)
        ax.set_ylabel("test RMSE")
        ax.legend(fontsize=7)

    result.draw = draw
    result.notes.append(f"formula recovered: {counts['numeric']} of {len(rows)} numerically, {counts['exact']} proven "
                        "equal by sympy after rounding to 4 digits")
    result.notes.append(f"KAN [n, 5, 1], lamb = {setting['lamb']}, {setting['steps']} LBFGS steps per stage; MLPs "
                        f"(silu) of sizes {[s[1:-1] for s in setting['mlp']]} hidden with the same total steps; "
                        "ranges from data/feynman_dimensionless.csv")
    return result
