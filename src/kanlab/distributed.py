"""Multi-process training on torch's DDP: one model, data sharded across processes.

Launch one process per device with ``torchrun --nproc_per_node=N your_script.py``; in the
script call ``init()`` and then ``fit(model, data, ...)`` on every rank with the same data and
the same model seed. What happens (all inside ``kanlab.train.fit(..., distributed=True)``):

- each rank trains on its rows (``DistributedSampler``'s split; equal shard sizes, padded
  by repeating rows when the count does not divide);
- the model runs under ``DistributedDataParallel``, which averages gradients, so Adam and
  LBFGS steps are global; LBFGS's closure returns the loss averaged over ranks, so every
  rank's line search makes the same decisions (ranks that disagree would deadlock);
- grid updates use the inputs gathered from all ranks, so every rank computes the same
  knots and coefficients (DDP broadcasts buffers, never parameters, so a per-rank grid
  update would leave ranks with different functions);
- checkpoints and the progress bar happen on rank 0 only. Do pruning and symbolic steps on
  rank 0 and ``broadcast_model`` the result, or run them on every rank with the same data.

Tested on CPU with 2 processes on the gloo backend (``tests/test_distributed.py``); the same
code selects NCCL for CUDA models, which has not been run here. ``lamb > 0`` is not yet
supported in distributed mode.
"""

from __future__ import annotations

import datetime

import torch

__all__ = ["init", "fit", "broadcast_model", "is_main_process"]


def init(backend: str | None = None, timeout_seconds: float = 300.0) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment; returns (rank, world size).

    ``backend`` defaults to NCCL when CUDA is available, else gloo. ``timeout_seconds``
    bounds every collective, so a rank that falls out of step fails instead of hanging.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds))
    return dist.get_rank(), dist.get_world_size()


def fit(model, dataset, **options) -> dict:
    """``kanlab.fit`` across the process group (module docstring); returns the history."""
    from .train import fit as fit_model

    return fit_model(model, dataset, distributed=True, **options)


def is_main_process() -> bool:
    """True on rank 0 (or without a process group): where to log and save."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@torch.no_grad()
def broadcast_model(model, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (after a step run on one rank
    that kept the model's shapes)."""
    import torch.distributed as dist

    for tensor in list(model.parameters()) + [b for b in model.buffers() if b is not None]:
        dist.broadcast(tensor.data, src)
