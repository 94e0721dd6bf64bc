"""Paper Table 2: the dimensionless Feynman equations, found from data by ``kanlab.discover``.

Equations, variables and input ranges come from ``data/feynman_dimensionless.csv``. Per
equation: 1000 random points over the ranges go to ``kanlab.discover`` (the equation is never
shown to it) with a budget of 60 s; its formula counts as recovered when sympy proves it equal
to the truth ("exact") or when its relative RMSE on 1000 fresh points is below 1e-6
("numeric"). The table gives the formula, the verdict, the seconds and what found it.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import torch

from .common import Result, Timer, discovered

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


FULL = dict(names=None, budget=60.0)
QUICK = dict(names=("II.38.3",), budget=10.0)


def run(quick: bool = False, seed: int = 0) -> Result:
    setting = QUICK if quick else FULL
    rows = [row for row in table() if setting["names"] is None or row["equation"] in setting["names"]]
    result = Result("feynman", "Feynman equations (paper Table 2): the formula found by kanlab.discover",
                    ["equation", "truth", "formula found", "recovered", "seconds", "found by"])
    counts = {"exact": 0, "numeric": 0}
    seconds = []
    with Timer() as total:
        for row in rows:
            expr, symbols, target = equation(row)
            ranges = json.loads(row["ranges"])
            formula, verdict, spent, how = discovered(expr, symbols, target, ranges, budget=setting["budget"],
                                                      seed=seed)
            counts["exact"] += verdict == "exact"
            counts["numeric"] += verdict.startswith(("exact", "numeric"))
            seconds.append(spent)
            result.rows.append([row["equation"], row["dimensionless_formula"], formula, verdict, spent, how])
    result.seconds = total.seconds

    def draw(figure):
        import numpy as np

        ax = figure.add_subplot(1, 1, 1)
        names = [row[0] for row in result.rows]
        colours = ["tab:green" if row[3] == "exact" else "tab:orange" if row[3].startswith("numeric") else "tab:red"
                   for row in result.rows]
        ax.bar(np.arange(len(names)), [row[4] for row in result.rows], color=colours)
        ax.set_xticks(np.arange(len(names)), names, rotation=60, fontsize=7)
        ax.set_ylabel("seconds to the formula (green: proven exact, red: not recovered)")

    result.draw = draw
    median = sorted(seconds)[len(seconds) // 2] if seconds else float("nan")
    result.notes.append(f"formula recovered: {counts['numeric']} of {len(rows)} ({counts['exact']} proven equal by "
                        f"sympy); median {median:.1f} s per equation, budget {setting['budget']:g} s, 1000 points")
    result.notes.append("kanlab.discover at its defaults; seed " + str(seed) + "; the truth is only used to check")
    return result
