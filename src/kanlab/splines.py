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

from typing import Sequence

import torch

__all__ = [
    "uniform_knots",
    "knots_between",
    "extend_knots",
    "knots_from_samples",
    "subdivide_knots",
    "bspline_basis",
    "spline_values",
    "fit_coefficients",
    "refit_spline",
    "knot_span",
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
    x: torch.Tensor, grid: int, k: int, grid_eps: float = 0.02, *, min_width: float = 1e-6
) -> torch.Tensor:
    """Knots adapted to samples: per input, ``eps * uniform + (1 - eps) * quantiles``.

    ``x`` is ``(batch, in)``. The uniform part spans each input's sample range; the adaptive
    part puts the ``G + 1`` interior knots at evenly spaced sample quantiles (linear
    interpolation between order statistics). An input whose samples span less than
    ``min_width`` gets a range of that width centred on its samples, so knots never collide.
    Returns ``(in, G + 2k + 1)``.
    """
    _check_grid(grid)
    _check_degree(k)
    if not 0.0 <= float(grid_eps) <= 1.0:
        raise ValueError(f"grid_eps must lie in [0, 1], got {grid_eps!r}")
    _check_samples(x, "x")
    ordered = torch.sort(x, dim=0).values.T  # (in, batch)
    low, high = ordered[:, :1], ordered[:, -1:]
    centre = (low + high) / 2
    narrow = (high - low) < min_width
    low = torch.where(narrow, centre - min_width / 2, low)
    high = torch.where(narrow, centre + min_width / 2, high)

    fractions = torch.linspace(0, 1, grid + 1, dtype=x.dtype, device=x.device)
    uniform = low + (high - low) * fractions
    position = fractions * (x.shape[0] - 1)
    lower_index = position.floor().long().clamp(max=x.shape[0] - 1)
    upper_index = (lower_index + 1).clamp(max=x.shape[0] - 1)
    weight = position - lower_index.to(x.dtype)
    adaptive = ordered[:, lower_index] * (1 - weight) + ordered[:, upper_index] * weight
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
    return fine[:, start : fine.shape[1] - start]


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


def bspline_basis(x: torch.Tensor, knots: torch.Tensor, k: int) -> torch.Tensor:
    """All B-spline basis functions of degree ``k`` at ``x``, by iterative Cox-de Boor.

    ``x``: ``(..., in)``; ``knots``: ``(in, n_knots)`` sorted. Returns ``(..., in, n_knots - k - 1)``.
    Intervals are half-open ``[t_m, t_{m+1})``, so every basis is 0 at and beyond the last knot.
    The result is a piecewise polynomial of ``x`` built from differentiable operations, so
    autograd gives exact derivatives of any order away from the knots.
    """
    _check_degree(k)
    if knots.dim() != 2:
        raise ValueError(f"knots must be 2-D (in, n_knots), got shape {tuple(knots.shape)}")
    if x.shape[-1] != knots.shape[0]:
        raise ValueError(
            f"x has {x.shape[-1]} inputs in its last dimension but knots has {knots.shape[0]} rows"
        )
    if knots.shape[1] < k + 2:
        raise ValueError(f"knots needs at least k + 2 = {k + 2} knots per input, got {knots.shape[1]}")
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


def spline_values(x: torch.Tensor, knots: torch.Tensor, coef: torch.Tensor, k: int) -> torch.Tensor:
    """Per-edge spline values ``(batch, out, in)`` for ``coef`` ``(out, in, G + k)``."""
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


def refit_spline(
    knots: torch.Tensor,
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
    is also kept between samples. Returns ``(out, in, G' + k)``.
    """
    n_new_basis = new_knots.shape[1] - k - 1
    count = 2 * n_new_basis if fill_points is None else fill_points
    points = []
    if count > 0:
        low, high = knot_span(new_knots, k)
        fractions = torch.linspace(0, 1, count, dtype=new_knots.dtype, device=new_knots.device)
        points.append(low + (high - low) * fractions.unsqueeze(1))  # (count, in)
    if samples is not None:
        points.append(samples.to(new_knots.dtype))
    if not points:
        raise ValueError("refit_spline needs samples or fill_points > 0")
    where = torch.cat(points, dim=0)
    values = spline_values(where, knots, coef, k)
    return fit_coefficients(where, values, new_knots, k)
