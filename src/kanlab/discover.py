"""``discover``: data in any units in, a formula out, within a time budget.

``kanlab.discover(X, y, variables=None, budget=60, seed=0)``:

1. Holds back a fifth of the rows (at least 5) for validation; the rest train.
2. **Term search** (``kanlab.terms``, its faster stages, up to a quarter of the budget):
   whether ``y``, after one invertible transform (``1/y``, ``y**2``, ``log y``, ``sin y``,
   ...), is a short sum of candidate terms of the inputs in their own units, or a ratio of
   two such sums, found by sparse least squares. On noise-free data it finds such a formula exactly, in seconds.
3. **Structure** (``kanlab.structure``) from a quickly trained spline KAN on inputs scaled to
   ``[-1, 1]``: additive and multiplicative groups, and pairs of inputs that enter only
   through their difference, sum, product or ratio (the gradient test of AI Feynman). For each
   such pair the term search runs again with the pair replaced by that one variable; then the
   term search's slowest stages (ratios over a monomial) run on the original inputs.
4. **KAN workflow** while the budget lasts, unless a formula is already exact: the paper's
   workflow on shape after shape (the structure's own split first, then one hidden node, a
   multiplication node, two, three, five hidden nodes, then a deeper [d, 3, 1, 1] for composites),
   sparsity strength after strength and
   seed after seed: train with sparsification, prune, train, refine the grid, train, snap every
   edge (``auto_symbolic``: domain-aware, look-alike aware), train the constants, and
   backtrack (``kanlab.backtrack``) where the formula is ten times worse than the network.
5. Every formula is measured on the held-back rows, in the original units, with its numbers
   made exact where they match (``p/q``, ``p/q*pi``, their square roots) and the rest rounded
   to as few digits as keep its error. The **Pareto front** keeps each formula that is more
   accurate than every simpler one (complexity: sympy's operation count plus the number of
   variables). The **chosen** formula is the simplest on the front whose validation RMSE is at
   most 1.5 times the lowest (plus 1e-9 of y's spread, so that fits at round-off all tie).

A validation RMSE below 1e-11 of y's spread counts as exact and ends the search early.

The result is a ``Discovery``: ``.formula`` (sympy, in the variables' names), ``.front``
(complexity, validation RMSE, formula, how it was found: PySR's equations table),
``.model`` (the KAN of the chosen formula: the trained one when the KAN workflow found it, one
built by ``from_formula`` when the term search did, ``None`` if the formula has a function
outside the library), ``.seconds``, ``.exact`` and ``.table()``.
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

#: Relative validation RMSE (of y's spread) under which a formula counts as exact.
EXACT = 1e-11


@dataclass(frozen=True)
class Candidate:
    """One formula found: its complexity, validation RMSE (original units), the formula, and
    how it was found (``"terms: log(y)"``, ``"KAN [2, 1, 1], lamb=0.01, seed 0"``)."""

    complexity: int
    rmse: float
    formula: object
    how: str
    model: object = field(default=None, repr=False, compare=False)
    exact: bool = False


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
    exact: bool = False

    def table(self) -> str:
        """The Pareto front as a markdown table, simplest first; the chosen row marked."""
        rows = ["| complexity | validation RMSE | formula | found by |", "|---|---|---|---|"]
        for candidate in self.front:
            mark = " (chosen)" if candidate.formula == self.formula else ""
            rows.append(f"| {candidate.complexity} | {candidate.rmse:.3g}{mark} | `{candidate.formula}` | {candidate.how} |")
        return "\n".join(rows)

    def to_dict(self) -> dict:
        """A JSON-ready report: the formula, the front, the time, what was tried."""
        return {"formula": str(self.formula), "exact": self.exact, "seconds": self.seconds, "tried": self.tried,
                "variables": self.variables, "structure": self.structure,
                "front": [{"complexity": c.complexity, "rmse": c.rmse, "formula": str(c.formula), "how": c.how,
                           "chosen": c.formula == self.formula} for c in self.front]}


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


def _probe(train, d: int, seed: int):
    """A quickly trained spline KAN on the scaled rows, and the additive and multiplicative
    groups read from it."""
    from .model import KAN
    from .structure import detect_separability

    probe = KAN([d, min(8, 2 * d + 1), 1], grid=5, seed=seed, dtype=torch.float64)
    probe.fit(train, steps=40, progress=False)
    found = {"add": [[i] for i in range(d)], "mul": [[i] for i in range(d)], "pairs": []}
    try:
        found["add"] = detect_separability(probe, train[0], "add", threshold=3e-2)
        found["mul"] = detect_separability(probe, train[0], "mul", threshold=3e-2)
    except ValueError:  # a constant or degenerate probe: no structure read
        pass
    return probe, found


#: how a pair (a, b) may enter: name, sympy combination, and the gradient identity it implies
#: (``g_a * da + g_b * db = 0`` with the weights below, in raw units)
_COMBINATIONS = (
    ("difference", lambda a, b: a - b, lambda xa, xb: (1.0, 1.0)),
    ("sum", lambda a, b: a + b, lambda xa, xb: (1.0, -1.0)),
    ("product", lambda a, b: a * b, lambda xa, xb: (xa, -xb)),
    ("ratio", lambda a, b: a / b, lambda xa, xb: (xa, xb)),
)


def _pairs(probe, x_scaled: torch.Tensor, x_raw: np.ndarray, scale: np.ndarray, limit: float = 0.05) -> list:
    """Pairs ``(score, i, j, name)`` whose gradients (of the probe, in raw units) say ``f``
    sees ``x_i`` and ``x_j`` only through one combination (``_COMBINATIONS``), best first."""
    x = x_scaled.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(probe(x).sum(), x)
    grad = grad.detach().numpy() / scale
    found = []
    for i in range(x_raw.shape[1]):
        for j in range(i + 1, x_raw.shape[1]):
            size = np.abs(grad[:, i]).mean() + np.abs(grad[:, j]).mean()
            if size <= 0:
                continue
            for name, _, weights in _COMBINATIONS:
                if name == "ratio" and not ((x_raw[:, j] > 0).all() or (x_raw[:, j] < 0).all()):
                    continue
                wa, wb = weights(x_raw[:, i], x_raw[:, j])
                scale_ab = np.abs(wa * grad[:, i]).mean() + np.abs(wb * grad[:, j]).mean()
                score = float(np.abs(wa * grad[:, i] + wb * grad[:, j]).mean() / max(scale_ab, 1e-300))
                if score < limit:
                    found.append((score, i, j, name))
    return sorted(found)


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
    shapes += [([d, 3, 1], None), ([d, 5, 1], None), ([d, 3, 1, 1], None)]  # last: a deeper shape, f(g(...))
    return shapes


def _masked(model, groups) -> None:
    """Keep only the first layer's edges from each group's inputs to its (sub)node."""
    with torch.no_grad():
        mask = torch.zeros_like(model.layers[0].mask)
        for node, inputs in enumerate(groups):
            mask[node, inputs] = 1.0
        model.layers[0].mask.copy_(mask)


def _workflow(train, width, groups, lamb: float, seed: int, steps: int, lib):
    """The paper's workflow on one shape, then backtracking where the snapped formula is ten
    times worse than the network; returns the snapped, polished model."""
    from .backtrack import backtrack
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
    with torch.no_grad():
        reference = float(torch.sqrt(torch.mean((model(train[0]) - train[1]) ** 2)))
    model.auto_symbolic(lib=lib)
    model.fit(train, steps=steps, update_grid=False, progress=False)
    model, _ = backtrack(model, train, reference=reference, lib=lib, steps=steps // 2)
    return model


def _readable(expr, rmse: float, symbols, X: np.ndarray, y: np.ndarray, spread: float):
    """The formula with exact constants (``pi``, ``1/2``, ``1/sqrt(2*pi)``) and its numbers
    rounded to as few digits (4, 6, 8 or 10) as keep its validation RMSE within 1.5 times its
    own or within 1e-6 of y's spread; sympy's automatic simplification then folds what the
    rounding exposes (``sin(theta - pi)`` is ``-sin(theta)``)."""
    from .formula import exact_constants, round_formula

    allowed = max(ACCURACY_SLACK * rmse, 1e-6 * spread)
    for digits in (4, 6, 8, 10):
        try:
            tolerance = 1e-9  # looser turns ordinary numbers into some p/q*pi**2 (9.81 -> sqrt(15197)/(4*pi))
            candidate = exact_constants(round_formula(exact_constants(expr, tolerance=tolerance), digits),
                                        tolerance=tolerance)
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        value = _rmse_of(candidate, symbols, X, y)
        if value <= allowed:
            return candidate, value
    return expr, rmse


def _simpler(expr, rmse: float, symbols, X: np.ndarray, y: np.ndarray, spread: float):
    """``sympy.simplify``'s form of a short formula (``sqrt(c**2*(a**2 + b**2))/(4*pi)`` ->
    ``c*sqrt(a**2 + b**2)/(4*pi)`` for positive c) when it is no longer and as accurate."""
    import sympy

    if _complexity(expr) > 40:
        return expr, rmse
    assumptions = {s: sympy.Symbol(s.name, positive=True) for s in symbols if (X[:, symbols.index(s)] > 0).all()}
    try:
        simple = sympy.simplify(expr.xreplace(assumptions)).xreplace({v: k for k, v in assumptions.items()})
    except Exception:  # noqa: BLE001 - sympy gives up on some forms: keep the formula as it is
        return expr, rmse
    value = _rmse_of(simple, symbols, X, y)
    if _complexity(simple) <= _complexity(expr) and value <= max(ACCURACY_SLACK * rmse, 1e-9 * spread):
        return simple, value
    return expr, rmse


def _front(candidates: list[Candidate]) -> list[Candidate]:
    front: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: (c.complexity, c.rmse)):
        if not front or candidate.rmse < front[-1].rmse:
            front.append(candidate)
    return front


class _Search:
    """The state of one ``discover`` call: the split, the candidates, the clock."""

    def __init__(self, X, y, variables, budget, seed, progress):
        import sympy

        self.begin = time.perf_counter()
        self.X, self.y, self.variables = X, y, variables
        self.budget = budget
        self.symbols = [sympy.Symbol(v) for v in variables]
        order = np.random.default_rng(seed).permutation(X.shape[0])
        n_val = max(5, X.shape[0] // 5)
        self.val, self.train = order[:n_val], order[n_val:]
        self.spread = float(np.std(y))
        self.exact_rmse = EXACT * max(self.spread, 1e-300)
        self.candidates: list[Candidate] = []
        self.tried = 0
        self.bar = _bar(budget, progress)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.begin)

    def exact(self) -> bool:
        return any(c.exact for c in self.candidates)

    def add(self, expr, rmse: float, how: str, model=None) -> None:
        if not math.isfinite(rmse) or not math.isfinite(_rmse_of(expr, self.symbols, self.X, self.y)):
            return  # NaN or infinite somewhere on the data's range: never a candidate
        exact = rmse <= self.exact_rmse
        expr, rmse = _readable(expr, rmse, self.symbols, self.X[self.val], self.y[self.val], self.spread)
        expr, rmse = _simpler(expr, rmse, self.symbols, self.X[self.val], self.y[self.val], self.spread)
        self.candidates.append(Candidate(_complexity(expr), rmse, expr, how, model, exact))
        logger.info("discover: %s: RMSE %.3g, %s", how, rmse, expr)
        if self.bar is not None:
            self.bar.n = min(round(time.perf_counter() - self.begin, 1), self.budget)
            self.bar.set_postfix_str(f"best RMSE {min(c.rmse for c in self.candidates):.3g}")

    def terms(self, X, symbols, share: float, how: str = "", back=None, kinds=("sum", "ratio", "normalised")) -> None:
        """The term search on columns ``X`` (named ``symbols``), for ``share`` of what is left."""
        from .terms import search, term_table

        if self.exact() or self.left() <= 0:
            return
        deadline = time.perf_counter() + max(share * self.left(), 0.0)
        table = term_table(X, symbols)
        for found in search(table, self.y, self.train, self.val, deadline=deadline, spread=self.spread, kinds=kinds):
            self.tried += 1
            formula = found.formula if back is None else found.formula.subs(back)
            rmse = _rmse_of(formula, self.symbols, self.X[self.val], self.y[self.val])
            self.add(formula, rmse, found.how + how)


def _bar(budget: float, progress):
    import sys

    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=budget, unit="s", desc="discover", leave=False, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}")


def discover(X, y, variables: Sequence[str] | None = None, budget: float = 60.0, seed: int = 0, *,
             lib=None, steps: int = 40, progress: bool | None = None) -> Discovery:
    """A formula for ``y`` from ``X`` (module docstring). ``X`` ``(n, d)`` and ``y`` ``(n,)`` /
    ``(n, 1)`` are arrays or tensors in any units; ``variables`` names the columns; ``budget``
    is seconds of wall clock (the step under way when it runs out is finished); ``lib`` the
    symbolic library of the KAN workflow (default: all built-ins); ``steps`` LBFGS steps per
    training stage; ``progress`` a progress bar (default: when stderr is a terminal)."""
    from .scaling import AffineScaling, formula_in_units

    X, y, variables = _arrays(X, y, variables)
    if not (isinstance(budget, (int, float)) and budget > 0):
        raise ValueError(f"budget must be a positive number of seconds, got {budget!r}")
    run = _Search(X, y, variables, budget, seed, progress)
    train_rows = run.train
    d = X.shape[1]
    try:
        run.terms(X, run.symbols, 0.25, kinds=("sum", "ratio"))
        x_scaling = AffineScaling.to_range(X[train_rows])
        y_scaling = AffineScaling.standard(y[train_rows, None])
        train = (torch.as_tensor(x_scaling.forward(X[train_rows])), torch.as_tensor(y_scaling.forward(y[train_rows, None])))
        structure: dict = {"add": [], "mul": [], "pairs": []}
        if not run.exact() and run.left() > 0:
            probe, structure = _probe(train, d, seed)
            pairs = _pairs(probe, train[0], X[train_rows], x_scaling.scale)
            structure["pairs"] = [[variables[i], variables[j], name] for _, i, j, name in pairs]
            for _, i, j, name in pairs[:3]:
                if run.exact() or run.left() <= 0:
                    break
                combine = dict((n, c) for n, c, _ in _COMBINATIONS)[name]
                inner = combine(run.symbols[i], run.symbols[j])
                u = _fresh_symbol(run.symbols)
                keep = [k for k in range(d) if k not in (i, j)]
                columns = np.column_stack([X[:, keep], combine(X[:, i], X[:, j])])
                run.terms(columns, [run.symbols[k] for k in keep] + [u], 0.5, f", with {u} = {inner}", {u: inner})
        run.terms(X, run.symbols, 0.5, kinds=("normalised",))  # the slow stages, after the reduced problems
        plan = [(width, groups, lamb, seed + s) for s in range(3) for lamb in (1e-2, 1e-3)
                for width, groups in _shapes(d, structure)]
        for width, groups, lamb, run_seed in plan:
            if run.exact() or run.left() <= 0:
                break
            run.tried += 1
            try:
                model = _workflow(train, width, groups, lamb, run_seed, steps, lib)
                (expr,) = formula_in_units(model, variables, x_scaling, y_scaling, round_digits=None)
            except (ValueError, RuntimeError) as error:  # a shape that prunes to nothing, a failed fit
                logger.info("discover: %s, lamb=%g, seed %d failed: %s", width, lamb, run_seed, error)
                continue
            rmse = _rmse_of(expr, run.symbols, X[run.val], y[run.val])
            run.add(expr, rmse, f"KAN {width}, lamb={lamb:g}, seed {run_seed}", model)
    finally:
        if run.bar is not None:
            run.bar.close()
    if not run.candidates:
        raise RuntimeError(f"discover found no finite formula in {budget} s; give it a larger budget")
    front = _front(run.candidates)
    floor = min(c.rmse for c in front) * ACCURACY_SLACK + 1e-9 * run.spread
    chosen = next(c for c in front if c.rmse <= floor)
    model = chosen.model if chosen.model is not None else _formula_model(chosen.formula, run.symbols, X)
    return Discovery(chosen.formula, front, model, time.perf_counter() - run.begin, variables, run.tried,
                     structure, exact=chosen.exact)


def _fresh_symbol(symbols):
    import sympy

    names = {s.name for s in symbols}
    name = next(n for n in ("u", "v", "w", *(f"u_{k}" for k in range(1, 100))) if n not in names)
    return sympy.Symbol(name)


def _formula_model(formula, symbols, X: np.ndarray):
    """A KAN computing ``formula`` (``from_formula``) over the data's ranges, or None when the
    formula holds a function outside the library."""
    from .compile import from_formula

    try:
        return from_formula(formula, symbols, domain=[(float(c.min()), float(c.max())) for c in X.T])
    except (ValueError, TypeError, KeyError, NotImplementedError) as error:
        logger.info("discover: no KAN for %s: %s", formula, error)
        return None
