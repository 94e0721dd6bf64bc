"""Backtracking after snapping: when the snapped formula is far worse than the network was,
re-snap the edges that cost the most to their next candidates.

``auto_symbolic`` picks each edge's function on its own, from that edge's values. An edge can
choose a function that fits it well alone but composes badly with the rest (a look-alike
whose error the next layer amplifies). ``backtrack(model, dataset, reference=...)`` checks the
whole snapped model against the data; while its training RMSE is above ``factor`` times
``reference`` (the network's RMSE before snapping), it finds the symbolic edge whose return to
its spline lowers the error most, tries that edge's next library candidates (each with the
constants trained again for ``steps`` LBFGS steps), and keeps the best model, if it beats the
current one. It returns the (possibly new) model and a log of what it changed.
"""

from __future__ import annotations

import copy
import logging

import torch

from .symbolic import OUTSIDE_DOMAIN, fix_symbolic, suggest_symbolic

__all__ = ["backtrack"]

logger = logging.getLogger(__name__)


def _pair(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(dataset, dict):
        return dataset["train_input"], dataset["train_label"]
    x, y = dataset
    return x, y


def _rmse(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.sqrt(torch.mean((model(x) - y) ** 2)))


def _edge_costs(model, x, y, current: float) -> list[tuple[float, int, int, int]]:
    """``(error drop when the edge is a spline again, l, i, j)`` for every symbolic edge."""
    costs = []
    for l, layer in enumerate(model.layers):
        for (j, i), function in layer.symbolic_edges.items():
            params = layer.symbolic_affine[j, i].tolist()
            layer.clear_symbolic(j, i)
            without = _rmse(model, x, y)
            layer.set_symbolic(j, i, function, params)
            costs.append((current - without, l, i, j))
    return sorted(costs, reverse=True)


def backtrack(model, dataset, *, reference: float, lib=None, factor: float = 10.0, rounds: int = 3,
              candidates: int = 4, steps: int = 20, weight_simple: float = 0.8):
    """Re-snap the costliest edges of a snapped ``model`` (module docstring). ``dataset`` is
    ``fit``'s dict or an ``(x, y)`` pair; ``reference`` the RMSE before snapping. Returns
    ``(model, log)``; ``model`` is the input itself when nothing beat it."""
    if not reference >= 0:
        raise ValueError(f"reference must be a non-negative RMSE, got {reference!r}")
    x, y = _pair(dataset)
    log: list[str] = []
    for _ in range(rounds):
        current = _rmse(model, x, y)
        if current <= factor * reference:
            break
        costs = _edge_costs(model, x, y, current)
        if not costs or costs[0][0] <= 0:
            break
        _, l, i, j = costs[0]
        old = model.layers[l].symbolic_function(j, i).name
        trial_base = copy.deepcopy(model)
        trial_base.layers[l].clear_symbolic(j, i)
        best, best_error, best_name = None, current, old
        for suggestion in suggest_symbolic(trial_base, l, i, j, lib=lib, topk=candidates + 1, weight_simple=weight_simple):
            if suggestion.name == old or suggestion.reason == OUTSIDE_DOMAIN:
                continue
            trial = copy.deepcopy(trial_base)
            fix_symbolic(trial, l, i, j, suggestion.name, lib=lib)
            try:
                trial.fit((x, y), steps=steps, update_grid=False, progress=False)
            except (RuntimeError, ValueError) as error:  # a candidate whose training fails
                logger.info("backtrack: %s on (%d,%d,%d) failed: %s", suggestion.name, l, i, j, error)
                continue
            error = _rmse(trial, x, y)
            if error < best_error:
                best, best_error, best_name = trial, error, suggestion.name
        if best is None:
            break
        log.append(f"edge ({l},{i},{j}): {old} -> {best_name}, RMSE {current:.3g} -> {best_error:.3g}")
        logger.info("backtrack: %s", log[-1])
        model = best
    return model, log
