"""``discover``: data in any units in, a formula out, within a time budget.

``kanlab.discover(X, y, variables=None, budget=60, seed=0)``:

1. Holds back a fifth of the rows (at least 5) for validation, scales every input onto
   ``[-1, 1]`` and standardises ``y`` (the formula is written back in the original units).
2. Reads the structure from a quickly trained spline KAN (``kanlab.structure``): where the
   function adds or multiplies groups of inputs, the first shapes it tries are built for that
   split (a hidden node per additive group, or a multiplication node of two groups, the other
   edges masked off).
3. Then, while the budget lasts, it runs the paper's workflow on shape after shape (one hidden
   node, a multiplication node, two, three, five hidden nodes), sparsity strength after
   strength and seed after seed: train with sparsification, prune, train, refine the grid,
   train, snap every edge (``auto_symbolic``: domain-aware, look-alike aware), train the
   constants.
4. Every formula is measured on the held-back rows, in the original units. The Pareto front
   keeps each formula that is more accurate than every simpler one (complexity: sympy's
   operation count). The chosen formula is the simplest on the front whose validation RMSE is
   at most 1.5 times the lowest (plus 1e-9 of y's spread, so exact ties go to the simplest).

The result is a ``Discovery``: ``.formula`` (sympy, in the variables' names), ``.front``
(complexity, validation RMSE, formula, shape, as PySR's equations table), ``.model`` (the KAN
of the chosen formula, on the scaled data), ``.seconds``, and ``.table()``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

__all__ = ["discover", "Discovery", "Candidate"]

logger = logging.getLogger(__name__)

#: The chosen formula's validation RMSE may be this many times the lowest.
ACCURACY_SLACK = 1.5


@dataclass(frozen=True)
class Candidate:
    """One formula found: its complexity, validation RMSE (original units), the formula, and
    how it was found (shape, sparsity strength, seed)."""

    complexity: int
    rmse: float
    formula: object
    width: list
    lamb: float
    seed: int
    model: object = field(repr=False, compare=False)


@dataclass
class Discovery:
    """What ``discover`` found (module docstring)."""

    formula: object
    front: list[Candidate]
    model: object
    seconds: float
    variables: list[str]
    tried: int
    structure: dict

    def table(self) -> str:
        """The Pareto front as a markdown table, simplest first; the chosen row marked."""
        rows = ["| complexity | validation RMSE | formula | shape |", "|---|---|---|---|"]
        for candidate in self.front:
            mark = " (chosen)" if candidate.formula == self.formula else ""
            rows.append(f"| {candidate.complexity} | {candidate.rmse:.3g}{mark} | `{candidate.formula}` | {candidate.width} |")
        return "\n".join(rows)


def _arrays(X, y, variables) -> tuple[np.ndarray, np.ndarray, list[str]]:
    X = np.asarray(X.detach().cpu() if isinstance(X, torch.Tensor) else X, dtype=np.float64)
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be (n, d), got shape {X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be (n,) or (n, 1) with n = {X.shape[0]} rows, got shape {y.shape}")
    if X.shape[0] < 20:
        raise ValueError(f"discover needs at least 20 rows, got {X.shape[0]}")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise ValueError("X and y must be finite (drop or fill the rows with NaN or inf first)")
    if variables is None:
        variables = [f"x_{i + 1}" for i in range(X.shape[1])]
    variables = [str(v) for v in variables]
    if len(variables) != X.shape[1] or len(set(variables)) != len(variables):
        raise ValueError(f"variables must be {X.shape[1]} distinct names, got {variables!r}")
    return X, y, variables


def _complexity(expr) -> int:
    import sympy

    return int(sympy.count_ops(expr, visual=False)) + len(expr.free_symbols)


def _rmse_of(expr, symbols, X: np.ndarray, y: np.ndarray) -> float:
    import sympy

    with np.errstate(all="ignore"):
        values = sympy.lambdify(symbols, expr, "numpy")(*X.T)
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), y.shape)
        if not np.isfinite(values).all():
            return math.inf
        return float(np.sqrt(np.mean((values - y) ** 2)))


def _probe_structure(train, d: int, seed: int) -> dict:
    """Additive and multiplicative groups read from a quickly trained spline KAN."""
    from .model import KAN
    from .structure import detect_separability

    probe = KAN([d, min(8, 2 * d + 1), 1], grid=5, seed=seed, dtype=torch.float64)
    probe.fit(train, steps=40, progress=False)
    found = {"add": [[i] for i in range(d)], "mul": [[i] for i in range(d)]}
    try:
        found["add"] = detect_separability(probe, train[0], "add", threshold=3e-2)
        found["mul"] = detect_separability(probe, train[0], "mul", threshold=3e-2)
    except ValueError:  # a constant or degenerate probe: no structure read
        pass
    return found


def _shapes(d: int, structure: dict) -> list[tuple[list, list | None]]:
    """``(width, hidden_groups)`` to try, the structure's own shapes first; hidden_groups lists
    the inputs each hidden (sub)node may see (None: all)."""
    shapes: list[tuple[list, list | None]] = []
    add, mul = structure["add"], structure["mul"]
    if d > 1 and len(add) > 1:
        shapes.append(([d, len(add), 1], add))
    if d > 1 and len(mul) == 2 and len(add) == 1:
        shapes.append(([d, [0, 1], 1], mul))
    shapes += [([d, 1, 1], None)]
    if d > 1:
        shapes += [([d, [0, 1], 1], None), ([d, 2, 1], None), ([d, [1, 1], 1], None)]
    shapes += [([d, 3, 1], None), ([d, 5, 1], None)]
    return shapes


def _masked(model, groups) -> None:
    """Keep only the first layer's edges from each group's inputs to its (sub)node."""
    with torch.no_grad():
        mask = torch.zeros_like(model.layers[0].mask)
        for node, inputs in enumerate(groups):
            mask[node, inputs] = 1.0
        model.layers[0].mask.copy_(mask)


def _workflow(train, width, groups, lamb: float, seed: int, steps: int, lib):
    """The paper's workflow on one shape; returns the snapped, polished model."""
    from .model import KAN

    model = KAN(width, grid=5, seed=seed, dtype=torch.float64)
    if groups is not None:
        _masked(model, groups)
    model.fit(train, steps=steps, lamb=lamb, progress=False)
    if groups is None:
        model = model.prune()
    model.fit(train, steps=steps, progress=False)
    model = model.refine(10)
    model.fit(train, steps=steps, progress=False)
    model.auto_symbolic(lib=lib)
    model.fit(train, steps=steps, update_grid=False, progress=False)
    return model


def _readable(expr, rmse: float, symbols, X: np.ndarray, y: np.ndarray, spread: float):
    """The formula with exact constants (``pi``, ``1/2``) and its numbers rounded to as few
    digits (4, 6, 8 or 10) as keep its validation RMSE within 1.5 times its own or within 1e-6
    of y's spread; sympy's automatic simplification then folds what the rounding exposes
    (``sin(theta - pi)`` is ``-sin(theta)``)."""
    from .formula import exact_constants, round_formula

    allowed = max(ACCURACY_SLACK * rmse, 1e-6 * spread)
    for digits in (4, 6, 8, 10):
        candidate = round_formula(exact_constants(expr, tolerance=10.0 ** -digits), digits)
        value = _rmse_of(candidate, symbols, X, y)
        if value <= allowed:
            return candidate, value
    return expr, rmse


def _front(candidates: list[Candidate]) -> list[Candidate]:
    front: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: (c.complexity, c.rmse)):
        if not front or candidate.rmse < front[-1].rmse:
            front.append(candidate)
    return front


def discover(X, y, variables: Sequence[str] | None = None, budget: float = 60.0, seed: int = 0, *,
             lib=None, steps: int = 40) -> Discovery:
    """A formula for ``y`` from ``X`` (module docstring). ``X`` ``(n, d)`` and ``y`` ``(n,)`` /
    ``(n, 1)`` are arrays or tensors in any units; ``variables`` names the columns; ``budget``
    is seconds of wall clock (the shape being tried when it runs out is finished); ``lib`` the
    symbolic library (default: all built-ins); ``steps`` LBFGS steps per training stage."""
    import sympy

    from .scaling import AffineScaling, formula_in_units

    begin = time.perf_counter()
    X, y, variables = _arrays(X, y, variables)
    if not (isinstance(budget, (int, float)) and budget > 0):
        raise ValueError(f"budget must be a positive number of seconds, got {budget!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(X.shape[0])
    n_val = max(5, X.shape[0] // 5)
    val_rows, train_rows = order[:n_val], order[n_val:]
    x_scaling = AffineScaling.to_range(X[train_rows])
    y_scaling = AffineScaling.standard(y[train_rows, None])
    train = (torch.as_tensor(x_scaling.forward(X[train_rows])), torch.as_tensor(y_scaling.forward(y[train_rows, None])))
    symbols = [sympy.Symbol(v) for v in variables]
    d = X.shape[1]
    structure = _probe_structure(train, d, seed)
    candidates: list[Candidate] = []
    tried = 0
    plan = [(width, groups, lamb, seed + s) for s in range(3) for lamb in (1e-2, 1e-3)
            for width, groups in _shapes(d, structure)]
    for width, groups, lamb, run_seed in plan:
        if time.perf_counter() - begin > budget:
            break
        tried += 1
        try:
            model = _workflow(train, width, groups, lamb, run_seed, steps, lib)
            (expr,) = formula_in_units(model, variables, x_scaling, y_scaling, round_digits=None)
        except (ValueError, RuntimeError) as error:  # a shape that prunes to nothing, a failed fit
            logger.info("discover: %s, lamb=%g, seed %d failed: %s", width, lamb, run_seed, error)
            continue
        rmse = _rmse_of(expr, symbols, X[val_rows], y[val_rows])
        if not math.isfinite(rmse):
            continue
        expr, rmse = _readable(expr, rmse, symbols, X[val_rows], y[val_rows], float(np.std(y)))
        candidates.append(Candidate(_complexity(expr), rmse, expr, width, lamb, run_seed, model))
        logger.info("discover: %s lamb=%g seed %d: RMSE %.3g, %s", width, lamb, run_seed, rmse, expr)
    if not candidates:
        raise RuntimeError(f"discover found no finite formula in {budget} s; give it a larger budget")
    front = _front(candidates)
    floor = min(c.rmse for c in front) * ACCURACY_SLACK + 1e-9 * float(np.std(y))
    chosen = next(c for c in front if c.rmse <= floor)
    return Discovery(chosen.formula, front, chosen.model, time.perf_counter() - begin, variables, tried, structure)
