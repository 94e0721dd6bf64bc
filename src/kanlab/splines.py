"""B-spline ground floor: knot vectors, bases, least-squares fits and grid changes.

Pure functions on tensors, in the manner of ``torch.nn.functional``; nothing here holds
state or imports anything of kanlab's.

Conventions (shapes): ``x`` is ``(batch, in)``; a knot tensor is ``(in, G + 2k + 1)``, one
knot vector per input, sorted along the last axis; bases are ``(batch, in, G + k)``;
coefficients are ``(out, in, G + k)`` (the ``nn.Linear`` weight layout with a basis axis);
per-edge values are ``(batch, out, in)``.

A basis is zero outside its knot vector's span ``[t_0, t_last)``, so the spline part of an
edge vanishes for inputs far out of range: only the residual (base) function remains there.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import torch

from . import native

__all__ = [
    "uniform_knots",
    "knots_between",
    "extend_knots",
    "knots_from_samples",
    "subdivide_knots",
    "bspline_basis",
    "bspline_basis_reference",
    "local_basis",
    "is_uniform",
    "KnotPlan",
    "plan_knots",
    "basis_features",
    "edge_mean_abs",
    "spline_values",
    "fit_coefficients",
    "refit_spline",
    "knot_span",
    "points_across",
]


def _check_degree(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k (spline degree) must be an integer >= 1, got {k!r}")


def _check_grid(grid: int, name: str = "grid") -> None:
    if not isinstance(grid, int) or isinstance(grid, bool) or grid < 1:
        raise ValueError(f"{name} (number of grid intervals) must be an integer >= 1, got {grid!r}")


def uniform_knots(
    in_features: int,
    grid: int,
    k: int,
    grid_range: Sequence[float] = (-1.0, 1.0),
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform knots over ``grid_range`` with ``grid`` intervals, extended by ``k`` each side.

    Returns ``(in_features, grid + 2k + 1)``: the same knot vector for every input.
    """
    _check_grid(grid)
    _check_degree(k)
    low, high = (float(v) for v in grid_range)
    if not high > low:
        raise ValueError(f"grid_range must be (low, high) with low < high, got {tuple(grid_range)!r}")
    dtype = dtype or torch.get_default_dtype()
    bounds = torch.tensor([low, high], dtype=torch.float64, device=device).expand(in_features, 2)
    return knots_between(bounds[:, 0], bounds[:, 1], grid, k).to(dtype)


def knots_between(low: torch.Tensor, high: torch.Tensor, grid: int, k: int) -> torch.Tensor:
    """Uniform knots per input over ``[low_i, high_i]`` (two ``(in,)`` tensors), extended by ``k``.

    Returns ``(in, grid + 2k + 1)`` in the dtype of ``low``.
    """
    _check_grid(grid)
    _check_degree(k)
    fractions = torch.linspace(0, 1, grid + 1, dtype=low.dtype, device=low.device)
    points = low.unsqueeze(1) + (high - low).unsqueeze(1) * fractions
    return extend_knots(points, k)


def extend_knots(points: torch.Tensor, k: int) -> torch.Tensor:
    """Extend sorted interior knots ``(in, G + 1)`` by ``k`` knots on each side.

    The added knots continue with the mean spacing ``(last - first) / G`` of each row, so a
    uniform grid extends to the knots ``uniform_knots`` gives. Returns ``(in, G + 2k + 1)``.
    """
    _check_degree(k)
    if points.dim() != 2 or points.shape[1] < 2:
        raise ValueError(f"points must be (in, G + 1) with G >= 1, got shape {tuple(points.shape)}")
    intervals = points.shape[1] - 1
    step = (points[:, -1:] - points[:, :1]) / intervals
    ladder = torch.arange(1, k + 1, dtype=points.dtype, device=points.device)
    below = points[:, :1] - step * ladder.flip(0)
    above = points[:, -1:] + step * ladder
    return torch.cat([below, points, above], dim=1)


def knots_from_samples(
    x: torch.Tensor, grid: int, k: int, grid_eps: float = 0.02, *, min_width: float = 1e-6, margin: float = 1.0
) -> torch.Tensor:
    """Knots adapted to samples: per input, ``eps * uniform + (1 - eps) * quantiles``.

    ``x`` is ``(batch, in)``. The uniform part spans each input's sample range; the adaptive
    part puts the ``G + 1`` interior knots at evenly spaced sample quantiles (linear
    interpolation between order statistics). The range is first widened at each end by
    ``margin`` times the mean gap between sorted samples, ``(max - min) / (batch - 1)``, the
    expected distance from the extreme sample to the edge of its distribution: so inputs
    just beyond the training sample are still on the end polynomial piece that the samples
    fit, not on the extension's weakly determined tail (``margin=0``: pykan's knots). An
    input whose samples span less than ``min_width`` gets a range of that width centred on
    its samples, so knots never collide. Returns ``(in, G + 2k + 1)``.
    """
    _check_grid(grid)
    _check_degree(k)
    if not 0.0 <= float(grid_eps) <= 1.0:
        raise ValueError(f"grid_eps must lie in [0, 1], got {grid_eps!r}")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    _check_samples(x, "x")
    ordered = torch.sort(x, dim=0).values.T  # (in, batch)
    low, high = ordered[:, :1], ordered[:, -1:]
    centre = (low + high) / 2
    narrow = (high - low) < min_width
    low = torch.where(narrow, centre - min_width / 2, low)
    high = torch.where(narrow, centre + min_width / 2, high)
    widen = float(margin) * (high - low) / max(x.shape[0] - 1, 1)
    low, high = low - widen, high + widen

    fractions = torch.linspace(0, 1, grid + 1, dtype=x.dtype, device=x.device)
    uniform = low + (high - low) * fractions
    position = fractions * (x.shape[0] - 1)
    lower_index = position.floor().long().clamp(max=x.shape[0] - 1)
    upper_index = (lower_index + 1).clamp(max=x.shape[0] - 1)
    weight = position - lower_index.to(x.dtype)
    adaptive = ordered[:, lower_index] * (1 - weight) + ordered[:, upper_index] * weight
    adaptive = torch.cat([low, adaptive[:, 1:-1], high], dim=1)  # the widened ends
    adaptive = torch.where(narrow, uniform, adaptive)
    points = grid_eps * uniform + (1 - grid_eps) * adaptive
    return extend_knots(points, k)


def subdivide_knots(knots: torch.Tensor, k: int, factor: int) -> torch.Tensor:
    """Split every interval of ``knots`` ``(in, G + 2k + 1)`` into ``factor`` equal parts.

    Keeps the interior ``G * factor`` intervals and the ``k`` nearest new knots on each side,
    giving ``(in, G * factor + 2k + 1)``. The new knots contain the old interior ones, so every
    old spline is exactly a new spline on the interior range (knot insertion).
    """
    _check_degree(k)
    _check_grid(factor, "factor")
    fractions = torch.arange(factor, dtype=knots.dtype, device=knots.device) / factor
    steps = torch.diff(knots, dim=1)
    fine = (knots[:, :-1].unsqueeze(-1) + steps.unsqueeze(-1) * fractions).reshape(knots.shape[0], -1)
    fine = torch.cat([fine, knots[:, -1:]], dim=1)
    start = k * factor - k
    return fine[:, start : fine.shape[1] - start].contiguous()


def _check_samples(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, in), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _reciprocal_or_zero(d: torch.Tensor) -> torch.Tensor:
    """1/d where d > 0 and 0 where two knots coincide (the 0/0 := 0 convention)."""
    positive = d > 0
    return torch.where(positive, 1.0 / torch.where(positive, d, torch.ones_like(d)), torch.zeros_like(d))


def bspline_basis_reference(x: torch.Tensor, knots: torch.Tensor, k: int) -> torch.Tensor:
    """All B-spline basis functions of degree ``k`` at ``x``, by iterative Cox-de Boor.

    The plain reference: every basis of every input is computed, ``k`` passes over
    ``(..., in, G + 2k)``; ``bspline_basis`` gives the same values touching only non-zero ones.

    ``x``: ``(..., in)``; ``knots``: ``(in, n_knots)`` sorted. Returns ``(..., in, n_knots - k - 1)``.
    Intervals are half-open ``[t_m, t_{m+1})``, so every basis is 0 at and beyond the last knot.
    The result is a piecewise polynomial of ``x`` built from differentiable operations, so
    autograd gives exact derivatives of any order away from the knots.
    """
    _check_basis_arguments(x, knots, k)
    t = knots
    xe = x.unsqueeze(-1)
    basis = ((xe >= t[:, :-1]) & (xe < t[:, 1:])).to(x.dtype)
    for p in range(1, k + 1):
        left_start = t[:, : -(p + 1)]
        left_scale = _reciprocal_or_zero(t[:, p:-1] - left_start)
        right_end = t[:, p + 1 :]
        right_scale = _reciprocal_or_zero(right_end - t[:, 1:-p])
        basis = (xe - left_start) * left_scale * basis[..., :-1] + (right_end - xe) * right_scale * basis[..., 1:]
    return basis


def _check_basis_arguments(x: torch.Tensor, knots: torch.Tensor, k: int) -> None:
    _check_degree(k)
    if knots.dim() != 2:
        raise ValueError(f"knots must be 2-D (in, n_knots), got shape {tuple(knots.shape)}")
    if x.shape[-1] != knots.shape[0]:
        raise ValueError(
            f"x has {x.shape[-1]} inputs in its last dimension but knots has {knots.shape[0]} rows"
        )
    if knots.shape[1] < k + 2:
        raise ValueError(f"knots needs at least k + 2 = {k + 2} knots per input, got {knots.shape[1]}")


def _interval_polynomials(knots: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per interval, the k + 1 local bases (and their derivatives) as polynomials in u = x - t_s.

    On interval s (t_s <= x < t_{s+1}) of input i, N_{s-k+r, k} is a polynomial of degree k in
    u. Its coefficients come from de Boor's recursion run on coefficient arrays, vectorised
    over every interval: ``left_p = u + (t_s - t_{s+1-p})``, ``right_p = (t_{s+p} - t_s) - u``,
    divided by ``t_{s+r+1} - t_{s+1-p+r}`` (0 where two knots coincide, the 0/0 := 0
    convention). Knots beyond the ends are padded evenly; they only reach bases that do not
    exist. Rows are ``i * (n_knots - 1) + s``; the value table's columns are ``t_s`` and then,
    power by power, the coefficients of the k + 1 bases, ``(rows, 1 + (k + 1)^2)``; the
    derivative table holds d/du the same way, ``(rows, 1 + k (k + 1))``.
    """
    n_knots = knots.shape[1]
    spacing = (knots[:, -1:] - knots[:, :1]) / (n_knots - 1)
    ladder = torch.arange(1, k + 1, dtype=knots.dtype, device=knots.device)
    padded = torch.cat([knots[:, :1] - spacing * ladder.flip(0), knots, knots[:, -1:] + spacing * ladder], dim=1)
    w = padded.unfold(1, 2 * k + 2, 1).reshape(-1, 2 * k + 2).T  # w[q] = t_{s-k+q}, one column per row
    start = w[k]

    def times_u(c: torch.Tensor) -> torch.Tensor:  # (rows, k + 1) coefficients times u
        return torch.cat([torch.zeros_like(c[:, :1]), c[:, :-1]], dim=1)

    one = torch.zeros(start.shape[0], k + 1, dtype=knots.dtype, device=knots.device)
    one[:, 0] = 1
    values = [one]
    for p in range(1, k + 1):
        new, carried = [], None
        for r in range(p):
            temp = values[r] * _reciprocal_or_zero(w[k + 1 + r] - w[k + 1 - p + r]).unsqueeze(1)
            right = (w[k + r + 1] - start).unsqueeze(1) * temp - times_u(temp)
            new.append(right if carried is None else right + carried)
            carried = (start - w[k + r + 1 - p]).unsqueeze(1) * temp + times_u(temp)
        new.append(carried)
        values = new
    coefficients = torch.stack(values, dim=-1)  # (rows, power, basis)
    powers = torch.arange(1, k + 1, dtype=knots.dtype, device=knots.device).view(1, k, 1)
    derivative = coefficients[:, 1:] * powers
    rows = start.shape[0]
    return (
        torch.cat([start.unsqueeze(1), coefficients.reshape(rows, -1)], dim=1).contiguous(),
        torch.cat([start.unsqueeze(1), derivative.reshape(rows, -1)], dim=1).contiguous(),
    )


@dataclass(frozen=True)
class KnotPlan:
    """Everything about a knot tensor that the fast path needs and that only changes with it.

    Build with ``plan_knots``; pass to ``basis_features`` / ``bspline_basis`` in place of the
    knots to skip rebuilding it on every call.
    """

    knots: torch.Tensor
    k: int
    uniform: bool
    start: torch.Tensor  # (in,) first knot
    step: torch.Tensor  # (in,) spacing (uniform knots only)
    value_table: torch.Tensor | None  # general knots only: see _interval_polynomials
    derivative_table: torch.Tensor | None
    basis_index: torch.Tensor  # (n_knots + 1, k + 1) clamped basis index per interval row
    basis_exists: torch.Tensor  # (n_knots + 1, k + 1) 0/1: that basis exists
    cardinal: torch.Tensor  # (k + 1 powers, k + 1 local bases): the bases as polynomials in f (uniform knots)
    cardinal_derivative: torch.Tensor  # (k powers, k + 1 local bases): their f-derivatives
    scatter_index: torch.Tensor  # (n_knots + 1, k + 1) like basis_index, but G + k where no basis exists

    @property
    def n_basis(self) -> int:
        return self.knots.shape[1] - self.k - 1


def plan_knots(knots: torch.Tensor, k: int, uniform: bool | None = None) -> KnotPlan:
    """Precompute the fast path's tables for ``knots`` ``(in, n_knots)`` (see ``KnotPlan``).

    ``uniform=None`` detects evenly spaced knots (``is_uniform``), which take a closed form.
    """
    _check_degree(k)
    if knots.dim() != 2 or knots.shape[1] < k + 2:
        raise ValueError(f"knots must be (in, n_knots) with n_knots >= k + 2 = {k + 2}, got {tuple(knots.shape)}")
    uniform = is_uniform(knots) if uniform is None else uniform
    n_knots = knots.shape[1]
    span = torch.arange(-1, n_knots, device=knots.device).unsqueeze(-1)
    index = span - k + torch.arange(k + 1, device=knots.device)
    real = (span >= 0) & (span <= n_knots - 2)
    exists = ((index >= 0) & (index < n_knots - k - 1) & real).to(knots.dtype)
    tables = (None, None) if uniform else _interval_polynomials(knots, k)
    cardinal, cardinal_derivative = _cardinal_polynomials(k)
    return KnotPlan(
        knots=knots,
        k=k,
        uniform=uniform,
        start=knots[:, 0].contiguous(),
        step=(knots[:, -1] - knots[:, 0]) / (n_knots - 1),
        value_table=tables[0],
        derivative_table=tables[1],
        basis_index=index.clamp(0, n_knots - k - 2),
        basis_exists=exists,
        cardinal=cardinal.to(knots),
        cardinal_derivative=cardinal_derivative.to(knots),
        scatter_index=torch.where(exists > 0, index.clamp(0, n_knots - k - 2), n_knots - k - 1),
    )


def _cardinal_polynomials(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Power-basis coefficients of the ``k + 1`` uniform B-spline pieces on one interval
    (new tensors each call, from the cached exact values; see ``_cardinal_coefficients``)."""
    forward, derivative = _cardinal_coefficients(k)
    return torch.tensor(forward, dtype=torch.float64), torch.tensor(derivative, dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def _cardinal_coefficients(k: int) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """Power-basis coefficients of the ``k + 1`` uniform B-spline pieces on one interval.

    On evenly spaced knots, with f = (x - t_s) / step in [0, 1), local basis r is a fixed
    polynomial of degree k in f: de Boor's recursion with every denominator p steps,
    ``N_r <- (r + 1 - f) N_r / p + (f + p - r) N_{r-1} / p``, run on exact rational
    coefficient lists. Returns the ``(k + 1, k + 1)`` matrix (rows: powers) mapping
    ``[1, f, .., f^k]`` to the bases and the ``(k, k + 1)`` one mapping ``[1, .., f^(k-1)]`` to
    their derivatives in f, as nested tuples of floats; cached per ``k`` (constants of the
    degree alone).
    """

    def times_linear(c: list, constant: int, slope: int) -> list:  # c(f) * (constant + slope f)
        out = [Fraction(0)] * (len(c) + 1)
        for power, value in enumerate(c):
            out[power] += constant * value
            out[power + 1] += slope * value
        return out

    def add(a: list, b: list) -> list:
        return [u + v for u, v in zip(a + [Fraction(0)] * (len(b) - len(a)), b + [Fraction(0)] * (len(a) - len(b)))]

    values = [[Fraction(1)]]
    for p in range(1, k + 1):
        new, carried = [], None
        for r in range(p):
            temp = [v / p for v in values[r]]
            right = times_linear(temp, r + 1, -1)
            new.append(right if carried is None else add(right, carried))
            carried = times_linear(temp, p - r - 1, 1)
        new.append(carried)
        values = new
    forward = tuple(tuple(float(c[power]) if power < len(c) else 0.0 for c in values) for power in range(k + 1))
    derivative = tuple(
        tuple(float((power + 1) * c[power + 1]) if power + 1 < len(c) else 0.0 for c in values) for power in range(k)
    )
    return forward, derivative


def _exporting() -> bool:
    """Whether torch.export / the ONNX exporter is tracing (they lack some eager operators)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(torch.onnx.is_in_onnx_export() or (is_exporting is not None and is_exporting()))


def _locate(x: torch.Tensor, plan: KnotPlan, table: torch.Tensor):
    """Interval row and that interval's table row for every entry of ``x`` ``(N, in)``.

    Returns ``position`` (s + 1, or 0 below t_0 and n_knots at or above t_last; the row of
    the plan's basis tables) and ``(N, in, columns)``: the row of ``table`` for each entry's
    interval (s clamped to a real one).
    """
    knots = plan.knots
    n_knots = knots.shape[1]
    if _exporting():  # ONNX has no searchsorted: count the knots at or below x instead
        position = (x.unsqueeze(-1) >= knots).sum(-1)
    else:
        position = torch.searchsorted(knots, x.T.contiguous(), right=True).T
    span = (position - 1).clamp(0, n_knots - 2)
    rows = span + torch.arange(knots.shape[0], device=x.device) * (n_knots - 1)
    return position, table.index_select(0, rows.reshape(-1)).reshape(*x.shape, table.shape[1])


def _horner(u: torch.Tensor, rows: torch.Tensor, degree: int, width: int) -> torch.Tensor:
    """Evaluate, per entry, ``width`` polynomials of ``degree`` in ``u`` ``(N, in)`` whose
    coefficients are ``rows[..., 1:]`` power by power; returns ``(N, in, width)``."""
    u = u.unsqueeze(-1)
    values = rows[..., 1 + degree * width : 1 + (degree + 1) * width]
    for power in range(degree - 1, -1, -1):
        values = torch.addcmul(rows[..., 1 + power * width : 1 + (power + 1) * width], values, u)
    return values


def _offset(x: torch.Tensor, position: torch.Tensor, plan: KnotPlan, start: torch.Tensor) -> torch.Tensor:
    """u = x - t_s, and 0 for inputs outside the knots, so their (discarded) values stay
    finite instead of overflowing to inf and turning into NaN when masked. (``where`` rather
    than a clamp: a clamp would halve the gradient of inputs exactly on the first knot.)"""
    inside = (position >= 1) & (position <= plan.knots.shape[1] - 1)
    return torch.where(inside, x - start, torch.zeros_like(x))


def is_uniform(knots: torch.Tensor) -> bool:
    """Whether every row of ``knots`` is evenly spaced up to rounding of its dtype."""
    steps = torch.diff(knots, dim=1)
    spacing = (knots[:, -1:] - knots[:, :1]) / (knots.shape[1] - 1)
    tolerance = 16 * torch.finfo(knots.dtype).eps * knots.abs().amax(dim=1, keepdim=True)
    return bool(((steps - spacing).abs() <= tolerance).all() and (spacing > 0).all())


def _locate_uniform(x: torch.Tensor, plan: KnotPlan):
    """``position`` (as ``_locate``) and ``f`` in [0, 1] within the interval, for evenly
    spaced knots. NaN inputs land on the 'below' row; far-out inputs get a finite f."""
    n_knots = plan.knots.shape[1]
    scaled = (x - plan.start) / plan.step
    span = torch.floor(scaled)
    position = torch.nan_to_num(span + 1, nan=0.0).clamp(0, n_knots).long()
    return position, (scaled - span.clamp(0, n_knots - 2)).clamp(0, 1)


def _polynomials(f: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``(N, in, width)`` values of polynomials in ``f`` ``(N, in)``: ``[1, f, f^2, ..] @ matrix``
    with ``matrix`` ``(powers, width)``. A handful of operations whatever the degree, and
    differentiable everywhere (plain products, no ``pow``)."""
    powers = [torch.ones_like(f), f]
    while len(powers) < matrix.shape[0]:
        powers.append(powers[-1] * f)
    return torch.stack(powers[: matrix.shape[0]], dim=-1) @ matrix


def _basis_index(position: torch.Tensor, plan: KnotPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Basis indices ``(N, in, k + 1)`` (clamped) and a 0/1 mask of those that exist, read
    from the plan's per-interval tables at row ``position``."""
    rows = position.reshape(-1)
    shape = (*position.shape, plan.k + 1)
    return (
        plan.basis_index.index_select(0, rows).reshape(shape),
        plan.basis_exists.index_select(0, rows).reshape(shape),
    )


def _local_values(x: torch.Tensor, plan: KnotPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k + 1`` local polynomial values ``(N, in, k + 1)`` (not yet masked) and the
    interval row of every entry."""
    k = plan.k
    if plan.uniform:
        position, f = _locate_uniform(x, plan)
        values = _polynomials(f, plan.cardinal)
    else:
        position, rows = _locate(x, plan, plan.value_table)
        values = _horner(_offset(x, position, plan, rows[..., 0]), rows, k, k + 1)
    # The power form can round a zero to -1e-17; bases are non-negative by definition.
    return values.clamp_min(0), position


def local_basis(x: torch.Tensor, plan: KnotPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k + 1`` possibly non-zero bases at each ``x`` ``(N, in)`` and their indices.

    Returns ``values`` and ``index``, both ``(N, in, k + 1)``: basis ``index[..., r]`` has value
    ``values[..., r]``. Entries of bases that do not exist (near the ends of the knot vector)
    and every entry for ``x`` outside ``[t_0, t_last)`` have value 0 and a clamped index.
    """
    values, position = _local_values(x, plan)
    index, exists = _basis_index(position, plan)
    return values * exists, index


def _local_derivative(x: torch.Tensor, plan: KnotPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """d/dx of the ``k + 1`` local bases, ``(N, in, k + 1)``, with their indices.

    Both paths differentiate the local polynomials exactly: in f (then / step) on evenly
    spaced knots, in u from the plan's derivative table otherwise.
    """
    k = plan.k
    if plan.uniform:
        position, f = _locate_uniform(x, plan)
        derivative = _polynomials(f, plan.cardinal_derivative)
        index, exists = _basis_index(position, plan)
        return derivative * (exists / plan.step.unsqueeze(-1)), index
    position, rows = _locate(x, plan, plan.derivative_table)
    derivative = _horner(_offset(x, position, plan, rows[..., 0]), rows, k - 1, k + 1)
    index, exists = _basis_index(position, plan)
    return derivative * exists, index


class _BasisFeatures(torch.autograd.Function):
    """Dense ``(N, (G + k [+ 1]) * in)`` features from the local bases, with an exact backward.

    Slot-major: column ``m * in + i`` holds basis ``m`` of input ``i``, and column
    ``(G + k) * in + i`` the residual value ``base[:, i]`` (without ``base`` that slot is
    dropped). The forward writes the ``k + 1`` local bases of each input into its slots
    (entries of bases that do not exist go to the residual slot first and are overwritten).
    The backward gathers the incoming gradient at the same columns and recomputes the local
    derivatives from ``x`` with differentiable operations, so ``create_graph=True`` gives exact
    second derivatives. With ``kanlab.native`` loaded, CPU tensors take its compiled kernel for
    the forward and for backward passes that build no graph (same arithmetic, same layout).
    """

    @staticmethod
    def forward(ctx, x, base, plan):
        ctx.save_for_backward(x)
        ctx.plan, ctx.width = plan, plan.n_basis + (base is not None)
        if native.usable(x, plan.k):
            return native.basis_features(x, base, plan)
        values, position = _local_values(x, plan)
        n_basis = plan.n_basis
        index = plan.scatter_index.index_select(0, position.reshape(-1)).reshape(values.shape)
        features = x.new_zeros(x.shape[0], n_basis + 1, x.shape[1])
        features.scatter_(1, index.transpose(1, 2), values.transpose(1, 2))
        if base is not None:
            features[:, n_basis] = base
        else:  # drop the spare slot; (x - x) carries a NaN input through, as the bases would
            features = features[:, :n_basis] + (x - x).unsqueeze(1)
        return features.reshape(x.shape[0], -1)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        plan = ctx.plan
        grad_x = grad_base = None
        if ctx.needs_input_grad[0] and not torch.is_grad_enabled() and native.usable(x, plan.k):
            # a first-order backward (no graph being built) may take the compiled kernel
            grad_x = native.basis_features_backward(grad, x, plan, ctx.width)
        elif ctx.needs_input_grad[0]:
            derivative, index = _local_derivative(x, plan)
            slots = grad.reshape(x.shape[0], ctx.width, x.shape[1])[:, : plan.n_basis]
            grad_x = (slots.gather(1, index.transpose(1, 2)) * derivative.transpose(1, 2)).sum(1)
        if ctx.needs_input_grad[1]:
            grad_base = grad.reshape(x.shape[0], ctx.width, x.shape[1])[:, plan.n_basis]
        return grad_x, grad_base, None


def _plain_features(x: torch.Tensor, base: torch.Tensor | None, plan: KnotPlan) -> torch.Tensor:
    """``_BasisFeatures``'s forward in out-of-place, differentiable torch operations, for
    ``torch.func`` transforms (``vmap``, ``grad``, ``jacrev``, ``hessian``), which see through
    plain operations but not through a custom autograd function's hand-written backward.
    Autograd differentiates the same local polynomials that ``_local_derivative`` writes out."""
    values, position = _local_values(x, plan)
    n_basis = plan.n_basis
    index = plan.scatter_index.index_select(0, position.reshape(-1)).reshape(values.shape)
    features = torch.zeros_like(x).unsqueeze(1).expand(-1, n_basis + 1, -1)
    features = features.scatter(1, index.transpose(1, 2), values.transpose(1, 2))
    if base is not None:
        features = torch.cat([features[:, :n_basis], base.unsqueeze(1)], dim=1)
    else:
        features = features[:, :n_basis] + (x - x).unsqueeze(1)
    return features.reshape(x.shape[0], -1)


def _features(x: torch.Tensor, base: torch.Tensor | None, plan: KnotPlan) -> torch.Tensor:
    if native.transforming():
        return _plain_features(x, base, plan)
    return _BasisFeatures.apply(x, base, plan)


def _as_plan(x: torch.Tensor, knots: torch.Tensor | KnotPlan, k: int | None, uniform: bool | None) -> KnotPlan:
    if isinstance(knots, KnotPlan):
        if x.shape[-1] != knots.knots.shape[0]:
            raise ValueError(
                f"x has {x.shape[-1]} inputs in its last dimension but the knots have {knots.knots.shape[0]} rows"
            )
        return knots
    if k is None:
        raise ValueError("k (spline degree) is needed when knots are given as a tensor")
    _check_basis_arguments(x, knots, k)
    return plan_knots(knots, k, uniform)


def basis_features(
    x: torch.Tensor,
    knots: torch.Tensor | KnotPlan,
    k: int | None = None,
    base: torch.Tensor | None = None,
    *,
    uniform: bool | None = None,
) -> torch.Tensor:
    """Layer features ``(N, (G + k) * in)``, or ``(N, (G + k + 1) * in)`` with ``base`` ``(N, in)``.

    Slot-major: column ``m * in + i`` holds basis ``m`` of input ``i`` and, with ``base``,
    column ``(G + k) * in + i`` holds ``base[:, i]``; ``.view(N, width, in)`` gives the slots.
    This is the training fast path: exact, built from only the non-zero bases.
    ``knots`` may be a ``KnotPlan`` (then ``k`` and ``uniform`` come from it).
    """
    plan = _as_plan(x, knots, k, uniform)
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (N, in), got shape {tuple(x.shape)}")
    return _features(x, base, plan)


def bspline_basis(
    x: torch.Tensor, knots: torch.Tensor | KnotPlan, k: int | None = None, *, uniform: bool | None = None
) -> torch.Tensor:
    """All B-spline basis functions of degree ``k`` at ``x`` ``(..., in)``: ``(..., in, G + k)``.

    Equal to the Cox-de Boor reference (``bspline_basis_reference``), computed from the
    ``k + 1`` non-zero bases per input; differentiable to any order in ``x``. ``knots`` may be
    a ``KnotPlan``; ``uniform=None`` detects evenly spaced knots.
    """
    plan = _as_plan(x, knots, k, uniform)
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    features = _features(flat, None, plan)
    slots = features.view(flat.shape[0], plan.n_basis, flat.shape[1])
    return slots.transpose(1, 2).reshape(*lead, flat.shape[1], plan.n_basis)


def spline_values(x: torch.Tensor, knots: torch.Tensor | KnotPlan, coef: torch.Tensor, k: int) -> torch.Tensor:
    """Per-edge spline values ``(batch, out, in)`` for ``coef`` ``(out, in, G + k)`` (``knots``
    may be their ``KnotPlan``)."""
    basis = bspline_basis(x, knots, k)
    return torch.einsum("bim,oim->boi", basis, coef)


def fit_coefficients(
    x: torch.Tensor, y: torch.Tensor, knots: torch.Tensor, k: int, *, ridge: float = 0.0
) -> torch.Tensor:
    """Least-squares coefficients so each edge's spline matches ``y`` at ``x``.

    ``x``: ``(batch, in)``; ``y``: ``(batch, out, in)``; returns ``(out, in, G + k)``, one
    independent fit per input, batched. A rank-deficient system (too few samples, or
    samples that leave some basis functions untouched) gets the minimum-norm solution;
    ``ridge > 0`` adds Tikhonov damping. On CPU this uses LAPACK ``gelsd``, which is
    bit-stable from call to call (the default driver is not).
    """
    _check_samples(x, "x")
    if y.dim() != 3 or y.shape[0] != x.shape[0] or y.shape[2] != x.shape[1]:
        raise ValueError(
            f"y must be (batch, out, in) = ({x.shape[0]}, out, {x.shape[1]}), got shape {tuple(y.shape)}"
        )
    if not torch.isfinite(y).all():
        raise ValueError("y contains NaN or infinite values")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge!r}")
    design = bspline_basis(x, knots, k).permute(1, 0, 2)  # (in, batch, n_basis)
    target = y.permute(2, 0, 1)  # (in, batch, out)
    n_basis = design.shape[-1]
    if ridge > 0:
        damping = (ridge**0.5) * torch.eye(n_basis, dtype=x.dtype, device=x.device)
        design = torch.cat([design, damping.expand(design.shape[0], -1, -1)], dim=1)
        target = torch.cat([target, target.new_zeros(target.shape[0], n_basis, target.shape[2])], dim=1)
    if design.device.type == "cpu":
        solution = torch.linalg.lstsq(design, target, driver="gelsd").solution
    else:
        # gelsd is CPU-only; the pseudo-inverse is rank-safe on every device.
        solution = torch.linalg.pinv(design) @ target
    return solution.permute(2, 0, 1).contiguous()  # (out, in, n_basis)


def knot_span(knots: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-input interior range ``[t_k, t_{G+k}]`` of a knot tensor: two ``(in,)`` tensors."""
    return knots[:, k], knots[:, -(k + 1)]


def points_across(knots: torch.Tensor, k: int, count: int) -> torch.Tensor:
    """``count`` evenly spaced points ``(count, in)`` across each input's interior knot range."""
    low, high = knot_span(knots, k)
    fractions = torch.linspace(0, 1, count, dtype=knots.dtype, device=knots.device)
    return low + (high - low) * fractions.unsqueeze(1)


def refit_spline(
    knots: torch.Tensor | KnotPlan,
    coef: torch.Tensor,
    k: int,
    new_knots: torch.Tensor,
    samples: torch.Tensor | None = None,
    *,
    fill_points: int | None = None,
) -> torch.Tensor:
    """Coefficients on ``new_knots`` that reproduce the spline ``(knots, coef)``.

    The fit is by least squares on the ``samples`` ``(batch, in)`` (where the function must be
    kept) together with ``fill_points`` evenly spaced points across each input's new interior
    range (default ``2 * (G' + k)``), so the system is never under-determined and the function
    is also kept between samples. Returns ``(out, in, G' + k)``. ``knots`` may be given as
    their ``KnotPlan`` (a layer's ``plan``), which saves rebuilding it.
    """
    n_new_basis = new_knots.shape[1] - k - 1
    count = 2 * n_new_basis if fill_points is None else fill_points
    points = []
    if count > 0:
        points.append(points_across(new_knots, k, count))
    if samples is not None:
        points.append(samples.to(new_knots.dtype))
    if not points:
        raise ValueError("refit_spline needs samples or fill_points > 0")
    where = torch.cat(points, dim=0)
    values = spline_values(where, knots, coef, k)
    return fit_coefficients(where, values, new_knots, k)


class _EdgeMeanAbs(torch.autograd.Function):
    """``mean_b |sum_m F[b, m, i] W[o, m, i]|`` per edge, recomputing the per-edge values in
    chunks in both passes so that no ``(batch, out, in)`` tensor is kept."""

    @staticmethod
    def forward(ctx, features, weight, chunk_size):
        ctx.save_for_backward(features, weight)
        ctx.chunk_size = chunk_size
        total = features.new_zeros(weight.shape[0], weight.shape[2])
        for chunk in torch.split(features, chunk_size):
            total += torch.einsum("bmi,omi->boi", chunk, weight).abs().sum(0)
        return total / features.shape[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        features, weight = ctx.saved_tensors
        scale = grad / features.shape[0]
        grad_features = torch.empty_like(features) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        start = 0
        for chunk in torch.split(features, ctx.chunk_size):
            signs = torch.einsum("bmi,omi->boi", chunk, weight).sign_().mul_(scale)
            if grad_weight is not None:
                grad_weight += torch.einsum("boi,bmi->omi", signs, chunk)
            if grad_features is not None:
                grad_features[start : start + chunk.shape[0]] = torch.einsum("boi,omi->bmi", signs, weight)
            start += chunk.shape[0]
        return grad_features, grad_weight, None


def edge_mean_abs(features: torch.Tensor, weight: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Per-edge mean absolute value ``(out, in)`` of ``phi[b, o, i] = sum_m F[b, m, i] W[o, m, i]``.

    ``features`` ``(N, m, in)`` and ``weight`` ``(out, m, in)`` are a layer's basis features
    and feature weights (slot-major, as ``basis_features`` lays them out), so this is the paper's ``|phi|_1`` from what the forward pass already
    computed. Differentiable (once); memory stays at one ``(chunk_size, out, in)`` block.
    """
    if features.dim() != 3 or weight.dim() != 3 or features.shape[1:] != weight.shape[1:]:
        raise ValueError(
            f"features (N, m, in) and weight (out, m, in) must agree, got {tuple(features.shape)} and {tuple(weight.shape)}"
        )
    if native.transforming():
        return torch.einsum("bmi,omi->boi", features, weight).abs().mean(0)
    return _EdgeMeanAbs.apply(features, weight, int(chunk_size))
