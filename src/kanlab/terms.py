"""The term search of ``discover``: a formula as a sparse combination of candidate terms.

Many formulas of physics are, after one invertible transform of the target, a short linear
combination of simple terms of the inputs, or a ratio of two such combinations:
``asin(n*sin(theta))`` is ``sin(y) = n*sin(theta)``, ``(a + b)/(1 + a*b)`` is
``y = a + b - a*b*y``, ``exp(-x**2/(2*s**2))/sqrt(2*pi*s**2)`` is ``log(y) = -x**2/(2*s**2) -
log(s) - log(2*pi)/2``. On noise-free data such a formula is found exactly by linear least
squares over the right few terms; this module finds the few terms (AI Feynman's polynomial fit
and brute force, widened with PySR's operators and made linear).

- ``term_table(X, symbols)``: the candidate terms, each a sympy expression, its values on the
  rows and a complexity: monomials ``prod x_i**p_i`` (``p_i`` in -2..2, inputs that reach zero
  or change sign get no negative powers), unary functions of one input (``sqrt``, ``1/sqrt``, ``exp``,
  ``exp(-x)``, ``log``, ``sin``, ``cos``, ``sin(pi*x)``, ``cos(pi*x)``, each only where finite
  on the data) alone, times a low monomial and times one another, and ``sin``/``cos`` of sums,
  differences and products of two inputs. The table shrinks with the number of inputs to stay
  within ``max_terms`` columns.
- ``transforms(y)``: the target transforms that are invertible on the data's range (``y``,
  ``1/y``, ``y**2``, ``1/y**2``, ``log``, ``exp``, ``sin``, ``cos``, ``tan``).
- ``search(...)``: for each transform ``t = T(y)`` and each normaliser ``m`` (``1`` first, then a
  low monomial), fits ``t*m = P(x) - t*Q(x)``, linear in the coefficients of ``P``'s and
  ``Q``'s terms, so that ``y = T^-1(P / (m + Q))``. It goes through the table tier by tier:
  plain sums first, then ratios over ``1 + Q``, then over a monomial ``+ Q``. In each stage
  the terms are chosen three ways on the training rows (unit columns, the constant term
  first): orthogonal matching pursuit, backward elimination from a pool of columns (the cost
  of dropping a term read from the Gram inverse), and a beam search that keeps the best
  supports of each size (it finds short formulas whose terms look alike on the data). Every
  support is a candidate; those that no simpler support beats on the training rows are judged
  on the validation rows in ``y``'s own units, and the Pareto front of complexity against
  validation error is written as sympy. A validation error at round-off stops the search.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["Found", "term_table", "transforms", "search"]

#: Relative validation RMSE under which a fit counts as exact and the search stops.
EXACT = 1e-11


@dataclass(frozen=True)
class Found:
    """One formula of the term search: its validation RMSE (y's units), an estimated
    complexity, the sympy formula, and how it was found."""

    rmse: float
    complexity: int
    formula: object
    how: str


@dataclass
class _Table:
    exprs: list
    values: np.ndarray  # (n, m)
    costs: np.ndarray  # (m,)
    tiers: list  # columns in tiers 1..k, k = 1..5


def _finite(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all()) and float(np.abs(values).max(initial=0.0)) < 1e12


def _unaries(x: np.ndarray, s) -> list[tuple]:
    """(expr, values, cost) of the unary functions that are finite on ``x``."""
    import sympy

    out = []
    with np.errstate(all="ignore"):
        candidates = [
            (sympy.sin(s), np.sin(x), 2), (sympy.cos(s), np.cos(x), 2),
            (sympy.sin(sympy.pi * s), np.sin(np.pi * x), 3), (sympy.cos(sympy.pi * s), np.cos(np.pi * x), 3),
            (sympy.exp(s), np.exp(x), 2), (sympy.exp(-s), np.exp(-x), 3),
        ]
        if x.min() >= 0:
            candidates.append((sympy.sqrt(s), np.sqrt(x), 2))
        if x.min() > 0:
            candidates += [(1 / sympy.sqrt(s), 1 / np.sqrt(x), 3), (sympy.log(s), np.log(x), 2)]
    for expr, values, cost in candidates:
        if _finite(values):
            out.append((expr, values, cost))
    return out


def _monomials(X: np.ndarray, symbols, max_degree: int) -> list[tuple]:
    """(expr, values, cost, degree) of ``prod x_i**p_i``, ``|p|_1 <= max_degree``, ``p_i`` in
    -2..2, negative powers only for inputs of one sign."""
    import sympy

    d = X.shape[1]
    allowed = []
    for i in range(d):
        low = -2 if (X[:, i] > 0).all() or (X[:, i] < 0).all() else 0
        allowed.append(range(low, 3))
    out = []
    for powers in itertools.product(*allowed):
        degree = sum(abs(p) for p in powers)
        if degree > max_degree:
            continue
        expr, values, cost = sympy.Integer(1), np.ones(X.shape[0]), 0
        for i, p in enumerate(powers):
            if p:
                expr = expr * symbols[i] ** p
                values = values * X[:, i] ** p
                cost += 1 + (abs(p) > 1) + (p < 0)
        cost += max(sum(1 for p in powers if p) - 1, 0)
        out.append((expr, values, cost, degree))
    return out


def term_table(X: np.ndarray, symbols, max_terms: int = 6000) -> _Table:
    """The candidate terms on the rows of ``X`` (module docstring), duplicates dropped, in
    tiers of growing richness: 1 monomials of degree <= 2; 2 higher monomials; 3 unary
    functions, their squares and trigonometric functions of two inputs; 4 those times a
    monomial of degree 1 and products of two unary functions; 5 unary functions times a
    monomial of degree 2. ``table.tiers[k]`` is the number of columns of tiers up to ``k + 1``."""
    import sympy

    d = X.shape[1]
    for mono_degree, times_degree, pair_products in ((4, 2, True), (3, 2, True), (3, 1, True), (2, 1, False),
                                                     (2, 0, False), (1, 0, False)):
        monomials = _monomials(X, symbols, mono_degree)
        low = [m for m in monomials if m[3] <= times_degree]
        unaries = [(i, *u) for i in range(d) for u in _unaries(X[:, i], symbols[i])]
        pairs = []
        for i, j in itertools.combinations(range(d), 2):
            a, b = symbols[i], symbols[j]
            for inner, values in ((a - b, X[:, i] - X[:, j]), (a + b, X[:, i] + X[:, j]), (a * b, X[:, i] * X[:, j])):
                pairs += [(sympy.sin(inner), np.sin(values), 3), (sympy.cos(inner), np.cos(values), 3)]
        size = (len(monomials) + len(unaries) * len(low) + len(pairs) * (1 + d * 2)
                + (len(unaries) ** 2 // 2 if pair_products else 0))
        if size <= max_terms:
            break
    rows: list[tuple] = [(m[0], m[1], m[2], 1 if m[3] <= 2 else 2) for m in monomials]
    for _, expr, values, cost in unaries:
        rows += [(expr * m[0], values * m[1], cost + m[2] + (m[3] > 0), 3 + m[3]) for m in low]
    for u in unaries:  # squares: sin(x)**2, cos(x)**2, ..., alone and times a monomial of degree 1
        rows += [(u[1] ** 2 * m[0], u[2] ** 2 * m[1], u[3] + 1 + m[2] + (m[3] > 0), 3 + m[3]) for m in low
                 if m[3] <= 1]
    for (i, e1, v1, c1), (j, e2, v2, c2) in itertools.combinations(unaries, 2):
        if pair_products or i == j:
            rows.append((e1 * e2, v1 * v2, c1 + c2 + 1, 4))
    linear = [m for m in monomials if m[3] <= 1]
    for expr, values, cost in pairs:
        rows += [(expr * m[0], values * m[1], cost + m[2] + (m[3] > 0), 3 + m[3]) for m in linear
                 if _finite(values * m[1])]
    return _unique(rows)


def _unique(rows: list[tuple], tolerance: float = 1e-8) -> _Table:
    """Order the terms by tier, then cost, and keep each that is finite, not constant (but one
    ``1``) and not a combination of the terms kept before it (``cos(x)**2`` after ``1`` and
    ``sin(x)**2``): its part outside their span must exceed ``tolerance`` of its norm. Exact
    dependencies leave least squares without a unique answer and the elimination below with
    no cost to read; once the kept terms reach half the rows the rest are kept unchecked."""
    shape = np.shape(rows[0][1])
    ordered = []
    for expr, values, cost, tier in sorted(rows, key=lambda r: (r[3], r[2])):
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), shape)
        norm = np.linalg.norm(values)
        constant = np.ptp(values) <= 1e-12 * np.abs(values).max(initial=0.0)
        if _finite(values) and norm > 0 and (expr == 1 or not constant):
            ordered.append((expr, values / norm, values, cost, tier))
    limit = shape[0] // 2
    basis = np.zeros((shape[0], limit))
    size = 0
    kept = []
    for start in range(0, len(ordered), 128):
        block = ordered[start:start + 128]
        if size >= limit:
            kept += block
            continue
        units = np.stack([entry[1] for entry in block], axis=1)
        for _ in range(2):  # twice is enough (Kahan-Parlett)
            units = units - basis[:, :size] @ (basis[:, :size].T @ units)
        first = size
        for index, entry in enumerate(block):
            if size >= limit:
                kept.append(entry)
                continue
            u = units[:, index]
            for _ in range(2):
                u = u - basis[:, first:size] @ (basis[:, first:size].T @ u)
            norm = np.linalg.norm(u)
            if norm > tolerance:
                basis[:, size] = u / norm
                size += 1
                kept.append(entry)
    tiers = np.asarray([k[4] for k in kept])
    return _Table([k[0] for k in kept], np.stack([k[2] for k in kept], axis=1), np.asarray([k[3] for k in kept]),
                  [int((tiers <= k).sum()) for k in range(1, 6)])


def transforms(y: np.ndarray) -> list[tuple]:
    """``(name, forward values, inverse as a sympy function, inverse on numpy, cost)`` of the
    target transforms invertible on ``y``'s range."""
    import sympy

    out = [("y", y, lambda u: u, lambda u: u, 0)]
    spread = float(np.abs(y).max())
    with np.errstate(all="ignore"):
        if np.abs(y).min() > 1e-6 * spread:
            out.append(("1/y", 1 / y, lambda u: 1 / u, lambda u: 1 / u, 1))
        if (y > 0).all():
            out += [("y**2", y**2, sympy.sqrt, np.sqrt, 2), ("1/y**2", y**-2.0, lambda u: 1 / sympy.sqrt(u),
                                                              lambda u: 1 / np.sqrt(u), 3),
                    ("log(y)", np.log(y), sympy.exp, np.exp, 2)]
        if (y < 0).all():
            out += [("y**2", y**2, lambda u: -sympy.sqrt(u), lambda u: -np.sqrt(u), 3),
                    ("log(-y)", np.log(-y), lambda u: -sympy.exp(u), lambda u: -np.exp(u), 3)]
        if np.abs(y).max() < 30:
            out.append(("exp(y)", np.exp(y), sympy.log, np.log, 2))
        if np.abs(y).max() <= math.pi / 2:
            out += [("sin(y)", np.sin(y), sympy.asin, np.arcsin, 2), ("tan(y)", np.tan(y), sympy.atan, np.arctan, 2)]
        if y.min() >= 0 and y.max() <= math.pi:
            out.append(("cos(y)", np.cos(y), sympy.acos, np.arccos, 2))
    return out


def _omp(A: np.ndarray, t: np.ndarray, max_support: int, start: list[int] | None = None) -> list[int]:
    """Orthogonal matching pursuit on the unit columns of ``A`` (from the columns ``start``):
    the chosen columns in order."""
    support: list[int] = list(start or [])
    residual = t.copy()
    if support:
        coef, *_ = np.linalg.lstsq(A[:, support], t, rcond=None)
        residual = t - A[:, support] @ coef
    scale = np.linalg.norm(t)
    for _ in range(max_support - len(support)):
        scores = np.abs(A.T @ residual)
        scores[support] = -1
        support.append(int(np.argmax(scores)))
        coef, *_ = np.linalg.lstsq(A[:, support], t, rcond=None)
        residual = t - A[:, support] @ coef
        if np.linalg.norm(residual) <= 1e-13 * scale:
            break
    return support


def _gains(gram: np.ndarray, b: np.ndarray, support: list[int], coef: np.ndarray) -> np.ndarray:
    """For every column k, the drop in squared residual from adding it to ``support``
    (orthogonal least squares): ``(A_k . r)**2 / |A_k - P_S A_k|**2``, from the Gram matrix
    ``A.T @ A`` and ``b = A.T @ t`` (``A.T @ r = b - G[:, S] @ coef``); 0 for the support and
    for columns inside its span."""
    if not support:
        return b**2 / np.maximum(np.diag(gram), 1e-300)
    cross = gram[:, support]
    inside = np.linalg.solve(gram[np.ix_(support, support)] + 1e-13 * np.eye(len(support)), cross.T)
    outside = np.diag(gram) - np.einsum("ks,sk->k", cross, inside)
    gains = (b - cross @ coef) ** 2 / np.maximum(outside, 1e-300)
    gains[outside <= 1e-10 * np.diag(gram)] = 0.0
    gains[support] = 0.0
    return gains


def _beam(A: np.ndarray, t: np.ndarray, start: list[int], width: int = 10, branch: int = 8,
          max_size: int = 8, gram: np.ndarray | None = None) -> list[list[int]]:
    """Beam search over supports: at each size, every support of the beam grows by each of the
    ``branch`` columns most correlated with its residual, and the ``width`` with the smallest
    residual stay. It finds short formulas whose terms the greedy path passes over (a term
    that looks like another on the data, ``cos(pi*a)`` for ``a``). It starts from ``start``
    (the constant term: a mean left in the target hides the terms that vary). Returns every
    support kept. Works on the Gram matrix (``_gains``)."""
    gram = A.T @ A if gram is None else gram
    b = A.T @ t
    tt = float(t @ t)

    def solved(key):
        sub = gram[np.ix_(key, key)] + 1e-13 * np.eye(len(key))
        try:
            coef = np.linalg.solve(sub, b[list(key)])
        except np.linalg.LinAlgError:
            return None
        return coef, max(tt - float(b[list(key)] @ coef), 0.0)

    start = tuple(start)
    beam: list[tuple] = [(start, solved(start)[0] if start else np.zeros(0), tt if not start else solved(start)[1])]
    out: list[list[int]] = []
    for _ in range(max_size):
        grown: dict = {}
        for support, coef, _ in beam:
            scores = _gains(gram, b, list(support), coef)
            for k in np.argsort(-scores)[:branch]:
                key = tuple(sorted(support + (int(k),)))
                if key not in grown and (fit := solved(key)) is not None:
                    grown[key] = fit
        ranked = sorted(grown.items(), key=lambda item: item[1][1])[:width]
        beam = [(key, coef, error) for key, (coef, error) in ranked]
        out += [list(key) for key, _ in ranked]
        if ranked and ranked[0][1][1] <= 1e-24 * tt:
            break
    return out


def _backward(A: np.ndarray, t: np.ndarray, pool: list[int], keep: int, exact_below: int = 32) -> list[list[int]]:
    """Backward elimination from all of ``pool``: each support of at most ``keep`` terms on the
    path that drops, one at a time, the term whose removal raises the least-squares residual
    least, ``coef_j**2 / (G^-1)_jj``. Above ``exact_below`` terms the inverse Gram matrix is
    downdated in place (recomputed every 16 removals, a ridge of 1e-12 keeping it solvable);
    below, coefficients and the diagonal are read from an SVD at every step."""
    out: list[list[int]] = []
    current = list(pool)
    inverse, rhs, since = None, None, 16
    while len(current) > 1:
        B = A[:, current]
        if len(current) > exact_below:
            if since == 16:
                rhs = B.T @ t
                inverse = np.linalg.inv(B.T @ B + 1e-12 * np.eye(len(current)))
                since = 0
            coef = inverse @ rhs
            diag = np.diag(inverse)
        else:
            U, sv, Vt = np.linalg.svd(B, full_matrices=False)
            rank = sv > 1e-13 * sv[0]
            coef = Vt[rank].T @ ((U[:, rank].T @ t) / sv[rank])
            diag = (Vt[rank].T ** 2) @ (1 / sv[rank] ** 2)
        with np.errstate(over="ignore"):
            j = int(np.argmin(coef**2 / np.maximum(diag, 1e-300)))
        if len(current) > exact_below:
            column = inverse[:, j].copy()
            inverse = np.delete(np.delete(inverse - np.outer(column, column) / inverse[j, j], j, 0), j, 1)
            rhs = np.delete(rhs, j)
            since += 1
        current.pop(j)
        if len(current) <= keep:
            out.append(list(current))
    return out


def _pool(A: np.ndarray, t: np.ndarray, forward: list[int], size: int) -> list[int]:
    """All columns when they are few enough for backward elimination, else the greedy path
    and the columns most correlated with ``t`` and with its residual after the first term."""
    if A.shape[1] <= size:
        return list(range(A.shape[1]))
    chosen = dict.fromkeys(forward)
    first = A[:, forward[:1]] @ np.linalg.lstsq(A[:, forward[:1]], t, rcond=None)[0]
    for target in (t, t - first):
        for k in np.argsort(-np.abs(A.T @ target))[: size // 2]:
            chosen.setdefault(int(k))
            if len(chosen) >= size:
                break
    return list(chosen)[:size]


def search(table: _Table, y: np.ndarray, train: np.ndarray, val: np.ndarray, *, deadline: float,
           max_support: int = 12, spread: float | None = None,
           kinds: tuple = ("sum", "ratio", "normalised")) -> list[Found]:
    """The term search (module docstring) on ``table`` over rows ``train``, judged on rows
    ``val``, tier after tier of the table; stops at ``deadline`` (``time.perf_counter()``) or
    an exact fit. ``kinds`` picks the stages: plain sums, ratios over ``1 + Q``, ratios over
    a monomial ``+ Q`` (the slowest). Returns the Pareto front of what it tried, simplest first."""
    spread = float(np.std(y)) if spread is None else spread
    exact = EXACT * max(spread, 1e-300)
    targets = transforms(y)
    normalisers = [k for k in range(table.tiers[0]) if table.exprs[k] != 1]
    tried: list[tuple] = []
    tiers = [(tier, columns) for tier, columns in enumerate(table.tiers, start=1)
             if tier == 1 or columns != table.tiers[tier - 2]]
    # plain sums tier by tier, then ratios over 1 + Q (apart: the ratio columns t*q correlate
    # with t itself and lead the greedy choice astray); then ratios over a monomial + Q
    ratios = [ratio for ratio, kind in ((False, "sum"), (True, "ratio")) if kind in kinds]
    stages = [(columns, t, None, ratio) for ratio in ratios for _, columns in tiers for t in targets]
    if "normalised" in kinds:
        stages += [(columns, t, m, True) for columns in [c for k, c in tiers if k <= 4] for m in normalisers
                   for t in targets[:4]]
    cache: dict = {}
    for columns, transform, normaliser, ratio in stages:
        if time.perf_counter() > deadline or (tried and min(r[0] for r in tried) <= exact):
            break
        rational = [k for k in range(columns) if table.costs[k] <= 4 and table.exprs[k] != 1 and k != normaliser]
        tried += _stage(table, columns, y, train, val, transform, normaliser, rational if ratio else [], max_support,
                        cache)
    return [_written(table, entry) for entry in _front(tried)]


def _stage(table: _Table, columns: int, y, train, val, transform, normaliser, rational, max_support,
           cache: dict) -> list[tuple]:
    """Fit ``T(y)*m = P - T(y)*Q`` over the first ``columns`` terms (``P``) and the terms
    ``rational`` (``Q``); every support on the greedy, backward and beam paths, judged on
    ``val``. ``cache`` keeps the Gram matrix of the unit ``P`` columns across stages."""
    name, t_all, inverse_sym, inverse_np, t_cost = transform
    if not _finite(t_all):
        return []
    m_all = np.ones_like(t_all) if normaliser is None else table.values[:, normaliser]
    A_all = np.concatenate([table.values[:, :columns], -t_all[:, None] * table.values[:, rational]], axis=1)
    target = t_all * m_all
    if not _finite(A_all[train]):
        return []
    norms = np.linalg.norm(A_all[train], axis=0)
    norms[norms == 0] = 1.0
    A = A_all[train] / norms
    constant = [k for k in range(min(columns, 1)) if table.exprs[k] == 1]  # '1' sorts first
    forward = _omp(A, target[train], max_support, start=constant)
    pool = _pool(A, target[train], forward, min(200, len(train) // 2))
    supports = [forward[:k] for k in range(1, len(forward) + 1)] + _backward(A, target[train], pool, max_support)
    if columns <= 2500:
        if cache.get("columns") != columns:
            cache.update(columns=columns, gram=A[:, :columns].T @ A[:, :columns])
        cross = A[:, columns:].T @ A
        gram = np.block([[cache["gram"], cross[:, :columns].T], [cross]]) if rational else cache["gram"]
        supports += _beam(A, target[train], constant, gram=gram)
    supports += [[k for k in support if k not in constant] for support in supports if constant and len(support) > 1]
    # the complexity of every support first, then least squares on the training rows only for
    # those no simpler support beats there, then the validation rows for what is left
    cost_of = lambda k: table.costs[k] if k < columns else table.costs[rational[k - columns]] + 1  # noqa: E731
    extra = t_cost + (normaliser is not None)
    ranked = []
    for key in {tuple(sorted(support)) for support in supports if support}:
        coef, *_ = np.linalg.lstsq(A[:, list(key)], target[train], rcond=None)
        residual = float(np.linalg.norm(A[:, list(key)] @ coef - target[train]))
        ranked.append((int(sum(cost_of(k) for k in key) + len(key) + extra), residual, key, coef))
    out, best = [], math.inf
    for complexity, residual, key, coef in sorted(ranked, key=lambda r: (r[0], r[1])):
        if residual >= best * (1 - 1e-9):
            continue
        best = residual
        coef = coef / norms[list(key)]
        with np.errstate(all="ignore"):
            p_val = sum(c * table.values[val, k] for c, k in zip(coef, key) if k < columns)
            q_val = sum(c * table.values[val, rational[k - columns]] for c, k in zip(coef, key) if k >= columns)
            predicted = inverse_np(p_val / (m_all[val] + q_val))
            error = float(np.sqrt(np.mean((predicted - y[val]) ** 2)))
        if math.isfinite(error):
            out.append((error, complexity, name, inverse_sym, normaliser, key, coef, rational, columns))
    return out


def _front(tried: list[tuple]) -> list[tuple]:
    front: list[tuple] = []
    for entry in sorted(tried, key=lambda e: (e[1], e[0])):
        if not front or entry[0] < front[-1][0] * (1 - 1e-9):
            front.append(entry)
    return front[:40]


def _written(table: _Table, entry: tuple) -> Found:
    import sympy

    error, complexity, name, inverse_sym, normaliser, key, coef, rational, n_p = entry
    p = sum((sympy.Float(c) * table.exprs[k] for c, k in zip(coef, key) if k < n_p), sympy.Integer(0))
    q = sum((sympy.Float(c) * table.exprs[rational[k - n_p]] for c, k in zip(coef, key) if k >= n_p), sympy.Integer(0))
    m = sympy.Integer(1) if normaliser is None else table.exprs[normaliser]
    formula = inverse_sym(p / (m + q)) if q != 0 or normaliser is not None else inverse_sym(p)
    how = f"terms: {name}" + ("" if q == 0 and normaliser is None else f" as a ratio over {m}")
    return Found(error, complexity, formula, how)
