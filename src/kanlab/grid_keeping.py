"""Grids that follow the data in a plain training loop, as BatchNorm's statistics do.

A ``KANLinear`` built with ``grid_update="auto"`` (the default) keeps, in training mode:

- ``input_min`` / ``input_max``: the lowest and highest value each input has taken (buffers,
  saved in the state dict);
- ``grid_steps``: how many training forwards it has seen (a buffer), counted until the schedule
  ends; after that a training forward records nothing, so it costs nothing.

On training forwards 1, 2, 4, 8, ... up to ``grid_update_until`` (10 updates by 512), before
computing its output, the layer spreads its knots evenly over the running extremes
(``update_grid`` with ``grid_eps=1`` on evenly spaced points between them; the coefficients are
refit so every edge keeps its function there). The spline then covers every value seen so far
instead of the fixed ``grid_range``: inputs outside the grid would get no spline at all, only
the residual. Evenly spaced knots, not the batch's quantiles (the layer's ``grid_eps``, which
``update_grid`` uses when called): in ``benchmarks/bench_deep.py`` on MNIST-1D the KAN MLP
reached 60.0% test accuracy with them against 57.9% with quantile knots, the KAN CNN 84.6%
against 81.0% (medians of 3 seeds, the learning rate chosen the same way), and they keep the
closed form of evenly spaced knots, the fast path.

Nothing moves in eval mode, without gradients, or under ``torch.compile``, tracing and
``torch.func`` transforms. The schedule is a count, so a seeded run is deterministic. Under
``torch.distributed`` with several processes, the extremes are reduced over the processes, so
every process computes the same grid. ``kanlab.fit`` pauses the automatic updates and applies its
own schedule (``update_grid``, ``grid_update_num``, ``stop_grid_update_step``).
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["due", "observe", "paused"]

#: the last training forward on which the automatic schedule updates the grid (by default)
UNTIL = 512


def due(step: int, until: int) -> bool:
    """Whether training forward ``step`` (from 1) updates the grid: powers of two up to ``until``."""
    return 1 <= step <= until and step & (step - 1) == 0


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def observe(layer, flat: torch.Tensor) -> None:
    """Record the batch ``flat`` ``(batch, in)`` in ``layer``'s running extremes and step count,
    and update its grid when the schedule says so (module docstring)."""
    if flat.shape[0] == 0:
        return
    # the count as a Python number, read from the buffer once (after building or loading a layer),
    # so a step on a GPU does not wait for the device to read it
    seen = layer.__dict__.get("_grid_steps_seen")
    if seen is None:
        seen = int(layer.grid_steps)
    if seen >= layer.grid_update_until:  # the schedule is over: nothing left to record
        layer._grid_steps_seen = seen
        return
    values = flat.detach().to(layer.input_min.dtype)
    layer.input_min.copy_(torch.minimum(layer.input_min, values.amin(0)))
    layer.input_max.copy_(torch.maximum(layer.input_max, values.amax(0)))
    layer.grid_steps += 1
    layer._grid_steps_seen = seen = seen + 1
    if not due(seen, layer.grid_update_until):
        return
    low, high = layer.input_min.clone(), layer.input_max.clone()
    if _distributed():
        import torch.distributed as dist

        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    # evenly spaced knots over the extremes, the function kept on evenly spaced points there
    steps = torch.linspace(0, 1, 4 * layer.n_basis + 1, dtype=low.dtype, device=low.device)[:, None]
    layer.update_grid(low + steps * (high - low), grid_eps=1.0)


@contextlib.contextmanager
def paused(model):
    """Within the block, no layer of ``model`` updates its grid by itself."""
    layers = [m for m in model.modules() if getattr(m, "grid_update", None) == "auto"]
    for layer in layers:
        layer.grid_update = None
    try:
        yield
    finally:
        for layer in layers:
            layer.grid_update = "auto"
