"""Grids that follow the data in a plain training loop, as BatchNorm's statistics do.

A ``KANLinear`` built with ``grid_update="auto"`` (the default) keeps, in training mode:

- ``input_min`` / ``input_max``: the lowest and highest value each input has taken (buffers,
  saved in the state dict);
- ``grid_steps``: how many training forwards it has seen (a buffer).

On training forwards 1, 2, 4, 8, ... up to ``grid_update_until`` (10 updates by 512), before
computing its output, the layer moves its knots to the batch's quantiles with the running
extremes as the ends (``update_grid``: ``grid_eps`` uniform, the rest quantiles, the
coefficients refit so every edge keeps its function on the samples). The spline then covers
every value seen so far instead of the fixed ``grid_range``: inputs outside the grid would get
no spline at all, only the residual.

Nothing moves in eval mode, without gradients, or under ``torch.compile``, tracing and
``torch.func`` transforms. The schedule is a count, so a seeded run is deterministic. Under
``torch.distributed`` with several processes, the extremes are reduced over the processes
and the knots are evenly spaced over them (the refit on evenly spaced points), so every
process computes the same grid. ``kanlab.fit`` pauses the automatic updates and applies its
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
    values = flat.detach().to(layer.input_min.dtype)
    layer.input_min.copy_(torch.minimum(layer.input_min, values.amin(0)))
    layer.input_max.copy_(torch.maximum(layer.input_max, values.amax(0)))
    layer.grid_steps += 1
    if not due(int(layer.grid_steps), layer.grid_update_until):
        return
    low, high = layer.input_min.clone(), layer.input_max.clone()
    if _distributed():
        import torch.distributed as dist

        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        steps = torch.linspace(0, 1, 4 * layer.n_basis + 1, dtype=low.dtype, device=low.device)[:, None]
        samples = low + steps * (high - low)
        eps = layer.grid_eps
        layer.grid_eps = 1.0  # evenly spaced: the same knots on every process
        try:
            layer.update_grid(samples)
        finally:
            layer.grid_eps = eps
        return
    layer.update_grid(torch.cat([values, low[None], high[None]]))


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
