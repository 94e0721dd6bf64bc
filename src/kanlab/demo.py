"""The README's main job: the paper's grid-extension workflow on exp(sin(pi x) + y^2)."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from .datasets import create_dataset, paper_function
from .model import KAN

__all__ = ["run_demo"]


def run_demo(
    grids: Sequence[int] = (5, 10, 20, 50),
    steps: int = 50,
    *,
    width: Sequence = (2, 5, 1),
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    out: Callable[[str], None] = print,
) -> KAN:
    """Train ``KAN(width)`` with LBFGS, extending the grid through ``grids``; report each stage.

    Returns the final model. ``out`` receives each line of the report.
    """
    function, n_var = paper_function("exp_sin")
    data = create_dataset(function, n_var=n_var, train_num=1000, test_num=1000, seed=seed, dtype=dtype)
    out(f"KAN{list(width)} on exp(sin(pi*x1) + x2^2): 1000 train / 1000 test points, {dtype}, LBFGS")
    out(f"{'grid':>6} {'steps':>6} {'train RMSE':>12} {'test RMSE':>12} {'time (s)':>9}")
    model = None
    for grid in grids:
        model = KAN(list(width), grid=grid, k=3, seed=seed, dtype=dtype) if model is None else model.refine(grid)
        start = time.perf_counter()
        history = model.fit(data, opt="LBFGS", steps=steps, progress=False)
        seconds = time.perf_counter() - start
        out(
            f"{grid:>6} {steps:>6} {history['train_loss'][-1]:>12.3e} "
            f"{history['test_loss'][-1]:>12.3e} {seconds:>9.2f}"
        )
    return model
