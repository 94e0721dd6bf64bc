"""Snap edges to library functions: ``suggest_symbolic``, ``fix_symbolic``, ``unfix_symbolic``,
``auto_symbolic``.

Edges are named as in pykan: ``(l, i, j)`` is the edge of layer ``l`` from input node ``i``
to output (sub)node ``j``. An edge is fit as ``c * f(a * x + b) + d`` to its own values on
the model's kept training sample (or on given inputs ``x``); candidates are ranked by

    score = weight_simple * complexity + (1 - weight_simple) * log2(1 + 1e-8 - R^2)

(lower is better), which trades accuracy against simplicity as the paper does. All the
edges of a layer and all the library functions are fit in one vectorised call.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .functions import AffineFit, Library, SymbolicFunction, default_library, fit_affine

__all__ = [
    "Suggestion",
    "resolve_library",
    "suggest_symbolic",
    "fix_symbolic",
    "unfix_symbolic",
    "unfix_symbolic_all",
    "auto_symbolic",
    "symbolic_score",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Suggestion:
    """One candidate for an edge: function name, R^2, complexity, ranking score, (a, b, c, d)."""

    name: str
    r2: float
    complexity: float
    score: float
    params: tuple[float, float, float, float]
    reason: str = ""


#: The score rewards R^2 up to 1 - R^2 = R2_FLOOR. pykan stops at 1e-5; a lower floor lets an
#: exact fit of a more complex function beat a merely good fit of a simpler one.
R2_FLOOR = 1e-8


def symbolic_score(r2: torch.Tensor, complexity: torch.Tensor, weight_simple: float) -> torch.Tensor:
    """The ranking score (lower is better) from R^2 and complexity (module docstring)."""
    return weight_simple * complexity + (1 - weight_simple) * torch.log2(1 + R2_FLOOR - r2.clamp(0.0, 1.0))


def resolve_library(lib=None) -> Library:
    """A ``Library`` from ``None`` (all built-ins), a ``Library``, or a list of names / entries."""
    if lib is None:
        return default_library()
    if isinstance(lib, Library):
        return lib
    if isinstance(lib, (str, SymbolicFunction)) or not isinstance(lib, Sequence):
        raise TypeError(f"lib must be None, a Library or a list of function names, got {lib!r}")
    builtins = default_library()
    entries = [item if isinstance(item, SymbolicFunction) else builtins[item] for item in lib]
    return Library(entries)


def _check_edge(model, l: int, i: int, j: int) -> None:
    if not 0 <= l < model.depth:
        raise IndexError(f"l must be a layer index in [0, {model.depth}), got {l}")
    layer = model.layers[l]
    if not 0 <= i < layer.in_features:
        raise IndexError(f"i must be an input node of layer {l} in [0, {layer.in_features}), got {i}")
    if not 0 <= j < layer.out_features:
        raise IndexError(f"j must be an output node of layer {l} in [0, {layer.out_features}), got {j}")


def _layer_samples(model, l: int, x: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(N, in)`` and edge values ``(N, out, in)`` of layer ``l`` on the samples."""
    inputs = model.layer_inputs(x)[l]
    with torch.no_grad():
        return inputs, model.layers[l].edge_activations(inputs)


def _fit_edges(model, l, edges, library: Library, x, fit_options) -> tuple[AffineFit, torch.Tensor]:
    """The affine fits of every library function to each edge, and each edge's input range
    ``(n_edges, 2)`` (lowest, highest sample). Each edge's samples, sorted by input, are dealt
    alternately into a fitting half and a held-out half; ``r2`` is the held-out R^2 (the lower
    of the two where fewer than 8 samples are held out), so a candidate that only fits the
    samples it was fit to does not win."""
    inputs, values = _layer_samples(model, l, x)
    cols = torch.tensor([i for i, _ in edges], device=inputs.device)
    rows = torch.tensor([j for _, j in edges], device=inputs.device)
    edge_x = inputs[:, cols].T.double()
    edge_y = values[:, rows, cols].T.double()
    span = torch.stack([edge_x.min(1).values, edge_x.max(1).values], 1).cpu()
    if edge_x.shape[1] < 8:
        return fit_affine(edge_x, edge_y, library, **fit_options), span
    order = edge_x.argsort(1)
    fit_rows, held_rows = order[:, 0::2], order[:, 1::2]
    fit = fit_affine(edge_x.gather(1, fit_rows), edge_y.gather(1, fit_rows), library, **fit_options)
    held_x, held_y = edge_x.gather(1, held_rows), edge_y.gather(1, held_rows)
    held = _held_out_r2(fit, library, held_x, held_y)
    fit.r2 = torch.minimum(fit.r2, held) if held_x.shape[1] < 8 else held
    return fit, span


def _held_out_r2(fit: AffineFit, library: Library, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(edges, functions)`` R^2 of each fitted ``c * f(a * x + b) + d`` on samples it was not
    fit to; an edge constant on them scores 1 where the candidate is constant there too."""
    centred = y - y.mean(1, keepdim=True)
    total = (centred**2).sum(1)
    r2 = torch.empty_like(fit.r2)
    for n, function in enumerate(library):
        a, b, c, d = (t[:, n : n + 1].to(x) for t in (fit.a, fit.b, fit.c, fit.d))
        with torch.no_grad():
            prediction = c * function.torch(a * x + b) + d
        residual = ((prediction - y) ** 2).sum(1)
        value = 1 - residual / total.clamp_min(1e-300)
        value = torch.where(total > 0, value, (residual <= 1e-24 * (1 + (y**2).sum(1))).to(value))
        r2[:, n] = torch.nan_to_num(value, nan=0.0, neginf=0.0).clamp(0.0, 1.0).to(r2)
    return r2


def _inside_domain(function: SymbolicFunction, a: float, b: float, low: float, high: float) -> bool:
    """Whether ``f(a x + b)`` is finite for every ``x`` in ``[low, high]``, the edge's range on
    the data. The affine argument runs between its values at the two ends; the fitted model
    itself never sees NaN (its torch forms are guarded), but the formula would."""
    ends = sorted((a * low + b, a * high + b))
    if not all(math.isfinite(z) for z in ends):
        return False
    domain = getattr(function, "domain", "real")
    if domain == "positive":
        return ends[0] > 0
    if domain == "nonnegative":
        return ends[0] >= -1e-12 * max(1.0, abs(b))
    if domain == "nonzero":
        return ends[0] > 0 or ends[1] < 0
    if domain == "open_unit":
        return -1 < ends[0] and ends[1] < 1
    if domain == "exp":
        return ends[1] < 700
    if domain == "tan":  # no pole pi/2 + k pi between the ends
        return math.floor(ends[0] / math.pi - 0.5) == math.floor(ends[1] / math.pi - 0.5)
    if domain == "real":
        return True
    import numpy as np  # another domain: look at the exact form across the range

    with np.errstate(all="ignore"):
        return bool(np.isfinite(function.numpy(np.linspace(ends[0], ends[1], 257))).all())


OUTSIDE_DOMAIN = "not finite on the data's range"


#: Functions that are polynomials already (their Taylor look-alikes are what the rule targets).
POLYNOMIALS = frozenset({"x", "x^2", "x^3", "x^4", "x^5", "0"})
#: Complexity added to a look-alike: it must fit 2^(penalty * w / (1 - w)) times better than
#: the polynomial it mimics (256x at the default weight_simple = 0.8) to win.
LOOKALIKE_PENALTY = 2.0


def _taylor_lookalike(function: SymbolicFunction, a: float, b: float, low: float, high: float) -> bool:
    """Whether ``f(a x + b)`` is, on ``[low, high]``, a short piece of a smooth function: its
    argument spans less than 5% of its own scale, where any smooth ``f`` is a low-degree
    polynomial to within the fit's precision (``c sin(a x + pi/2) + d`` with a tiny ``a``
    for ``x^2``, ``exp(a x)`` for ``1 + a x``)."""
    if function.name in POLYNOMIALS or getattr(function, "step", False):
        return False
    z0, z1 = a * low + b, a * high + b
    return abs(z1 - z0) < 0.05 * max(1.0, abs(z0 + z1) / 2)


def _suggestions(fit: AffineFit, library: Library, edge: int, weight_simple: float,
                 span: torch.Tensor | None = None) -> list[Suggestion]:
    """Candidates best first. A Taylor look-alike of a polynomial (``_taylor_lookalike``) has
    its complexity raised by ``LOOKALIKE_PENALTY``, so the polynomial it mimics wins a tie;
    candidates whose formula is NaN or infinite somewhere on the edge's data range (``span``:
    lowest, highest input) go last, with that reason."""
    functions = list(library)
    complexity = torch.tensor([f.complexity for f in functions], dtype=torch.float64)
    inside = [True] * len(functions)
    if span is not None:
        low, high = float(span[edge, 0]), float(span[edge, 1])
        for n, function in enumerate(library):
            a, b, _, _ = fit.params(edge, n)
            inside[n] = _inside_domain(function, a, b, low, high)
            if _taylor_lookalike(function, a, b, low, high):
                complexity[n] += LOOKALIKE_PENALTY
    scores = symbolic_score(fit.r2[edge], complexity, weight_simple)
    order = sorted(range(len(library)), key=lambda n: (not inside[n], float(scores[n]), -float(fit.r2[edge, n])))
    return [
        Suggestion(fit.names[n], float(fit.r2[edge, n]), float(functions[n].complexity), float(scores[n]), fit.params(edge, n),
                   fit.reason[edge] if inside[n] else OUTSIDE_DOMAIN)
        for n in order
    ]


def suggest_symbolic(
    model,
    l: int,
    i: int,
    j: int,
    lib=None,
    topk: int = 5,
    *,
    weight_simple: float = 0.8,
    x: torch.Tensor | None = None,
    **fit_options,
) -> list[Suggestion]:
    """The ``topk`` best library functions for edge ``(l, i, j)``, best first."""
    _check_edge(model, l, i, j)
    _check_weight(weight_simple)
    library = resolve_library(lib)
    fit, span = _fit_edges(model, l, [(i, j)], library, x, fit_options)
    return _suggestions(fit, library, 0, weight_simple, span)[:topk]


def fix_symbolic(
    model,
    l: int,
    i: int,
    j: int,
    name: str | SymbolicFunction,
    fit_params: bool = True,
    *,
    params: Sequence[float] | None = None,
    lib=None,
    x: torch.Tensor | None = None,
    **fit_options,
) -> Suggestion:
    """Make edge ``(l, i, j)`` the library function ``name``, in place; returns the fit.

    With ``fit_params`` (the default) a, b, c, d are fit to the edge's values on the samples;
    otherwise they are ``params`` (default ``(1, 0, 1, 0)``), and R^2 is reported as NaN.
    """
    _check_edge(model, l, i, j)
    function = name if isinstance(name, SymbolicFunction) else resolve_library(lib)[name]
    if params is not None and fit_params:
        raise ValueError("pass either params=(a, b, c, d) or fit_params=True, not both")
    if fit_params:
        fit, _ = _fit_edges(model, l, [(i, j)], Library([function]), x, fit_options)
        chosen = _suggestions(fit, Library([function]), 0, 0.8)[0]
    else:
        values = tuple(float(v) for v in (params if params is not None else (1.0, 0.0, 1.0, 0.0)))
        if len(values) != 4:
            raise ValueError(f"params must be (a, b, c, d), got {params!r}")
        chosen = Suggestion(function.name, math.nan, float(function.complexity), math.nan, values)
    model.layers[l].set_symbolic(j, i, function, chosen.params)
    return chosen


def unfix_symbolic(model, l: int, i: int, j: int, *, refit: bool = False, x: torch.Tensor | None = None) -> None:
    """Return edge ``(l, i, j)`` to a spline, in place.

    By default the spline it had before snapping comes back. With ``refit=True`` the spline
    is instead fit (least squares, on the samples and across the grid) to the symbolic
    function, so the model keeps computing (nearly) what it did: use this to fine-tune a
    symbolic model, for example one built by ``from_formula``.
    """
    _check_edge(model, l, i, j)
    unfix_symbolic_all(model, edges=[(l, i, j)], refit=refit, x=x)


@torch.no_grad()
def unfix_symbolic_all(model, *, edges=None, refit: bool = True, x: torch.Tensor | None = None) -> None:
    """Return symbolic edges (all, or ``edges = [(l, i, j), ...]``) to splines, in place.

    With ``refit`` (the default here) each spline is fit to its symbolic function, so the
    model keeps its function on the grid; the residual weight ``scale_base`` is kept.
    """
    from . import splines

    if edges is None:
        edges = [(l, i, j) for l, layer in enumerate(model.layers) for (j, i) in layer.symbolic_edges]
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for l, i, j in edges:
        _check_edge(model, l, i, j)
        by_layer.setdefault(l, []).append((i, j))
    have_samples = x is not None or model.sample_input is not None
    inputs = model.layer_inputs(x) if refit and have_samples else None
    for l, pairs in sorted(by_layer.items()):
        layer = model.layers[l]
        if refit:
            points = splines.points_across(layer.grid, layer.k, 4 * layer.n_basis + 1)
            if inputs is not None:
                low, high = splines.knot_span(layer.grid, layer.k)
                points = torch.cat([points, inputs[l].clamp(low, high)])
            symbolic = layer.edge_activations(points) - layer.edge_activations(points, part="numeric")
            residual = layer.base_fun(points).unsqueeze(1) * layer.scale_base
            target = (symbolic / layer.mask.where(layer.mask != 0, torch.ones_like(layer.mask)) - residual)
            target = target / layer.scale_sp.where(layer.scale_sp != 0, torch.ones_like(layer.scale_sp))
            coef = splines.fit_coefficients(points, target, layer.grid, layer.k)
            for i, j in pairs:
                if layer.symbolic_function(j, i) is not None:
                    layer.coef[j, i] = coef[j, i]
                    if layer.scale_sp[j, i] == 0:
                        layer.scale_sp[j, i] = 1.0
        for i, j in pairs:
            layer.clear_symbolic(j, i)


def _check_weight(weight_simple: float) -> None:
    if not 0.0 <= float(weight_simple) <= 1.0:
        raise ValueError(f"weight_simple must lie in [0, 1], got {weight_simple!r}")


def _composite_suggestions(model, l, edges, bests, library, weight_simple, x, fit_options, compose_below) -> dict:
    """``{position: (suggestion, function)}`` for the edges whose best single function has R^2
    below ``compose_below`` and a composite ``f(g(x))`` that scores better."""
    from .compose import compositions

    weak = [n for n, best in enumerate(bests) if compose_below is not None and best.reason != OUTSIDE_DOMAIN
            and best.r2 < compose_below]
    if not weak:
        return {}
    composite_library = compositions(library)
    if not len(composite_library):
        return {}
    fit, span = _fit_edges(model, l, [edges[n] for n in weak], composite_library, x, fit_options)
    found = {}
    for position, n in enumerate(weak):
        best = _suggestions(fit, composite_library, position, weight_simple, span)[0]
        if best.reason != OUTSIDE_DOMAIN and best.score < bests[n].score and best.r2 > bests[n].r2:
            found[n] = (best, composite_library[best.name])
    return found


def auto_symbolic(
    model,
    lib=None,
    r2_threshold: float = 0.0,
    weight_simple: float = 0.8,
    *,
    x: torch.Tensor | None = None,
    compose_below: float = 0.999,
    **fit_options,
) -> dict[tuple[int, int, int], Suggestion]:
    """Fix the best library function on every active spline edge, in place.

    An edge whose best function leaves its held-out R^2 below ``compose_below`` also tries the
    composites ``f(g(x))`` of common library functions (``kanlab.compose``), and takes one
    when it scores better (``None`` tries none).

    A candidate whose formula would be NaN or infinite somewhere on the edge's data range (a
    log or square root of an argument that turns negative there, a pole inside it) is never
    chosen. Edges whose best candidate has R^2 below ``r2_threshold`` stay splines. Returns
    ``{(l, i, j): Suggestion}`` for every edge considered (fixed or not: compare
    ``r2`` with the threshold). Already symbolic and pruned (masked) edges are skipped.
    """
    _check_weight(weight_simple)
    library = resolve_library(lib)
    report: dict[tuple[int, int, int], Suggestion] = {}
    # layer by layer: each layer is fit on its inputs under the already symbolic layers before it
    for l, layer in enumerate(model.layers):
        active = (layer.mask != 0) & (layer.symbolic_mask == 0)
        edges = [(int(i), int(j)) for j, i in active.nonzero().tolist()]
        if not edges:
            continue
        fit, span = _fit_edges(model, l, edges, library, x, fit_options)
        bests = [_suggestions(fit, library, position, weight_simple, span)[0] for position in range(len(edges))]
        composites = _composite_suggestions(model, l, edges, bests, library, weight_simple, x, fit_options, compose_below)
        for position, (i, j) in enumerate(edges):
            best, function = bests[position], None
            if position in composites:
                best, function = composites[position]
            report[(l, i, j)] = best
            if best.reason == OUTSIDE_DOMAIN:
                logger.info("keeping (%d,%d,%d) a spline: every candidate is NaN or infinite on its data", l, i, j)
            elif best.r2 >= r2_threshold:
                layer.set_symbolic(j, i, function or library[best.name], best.params)
                logger.info("fixing (%d,%d,%d) with %s, r2=%.6g", l, i, j, best.name, best.r2)
            else:
                logger.info("keeping (%d,%d,%d) a spline: best %s has r2=%.6g < %g", l, i, j, best.name, best.r2, r2_threshold)
    return report
