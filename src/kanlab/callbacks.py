"""Callbacks for ``fit`` (each called as ``callback(step, model, history)`` at every log step).

``TensorBoardLogger`` writes the history's latest numbers as TensorBoard scalars (needs the
``tensorboard`` package). Periodic checkpoints are ``fit``'s own ``checkpoint`` /
``checkpoint_every`` options, since they also hold the optimizer's state.
"""

from __future__ import annotations

import math

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger:
    """Log ``train_loss``, ``test_loss``, ``reg``, ``objective`` and every ``test_<metric>``
    under ``prefix/`` to a TensorBoard run in ``log_dir`` (created on the first call)."""

    def __init__(self, log_dir, prefix: str = "fit") -> None:
        self.log_dir = str(log_dir)
        self.prefix = prefix
        self._writer = None

    def __call__(self, step: int, model, history: dict) -> bool:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.log_dir)
        for key, values in history.items():
            if key in ("step", "train_rmse", "test_rmse") or not isinstance(values, list) or not values:
                continue
            value = values[-1]
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(f"{self.prefix}/{key}", value, step)
        self._writer.flush()
        return False

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
