"""Datasets: ``create_dataset`` (pykan's dict of train / test tensors) and the paper's toy functions."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

__all__ = ["create_dataset", "paper_function"]


def _ranges(ranges, n_var: int) -> list[tuple[float, float]]:
    if (
        isinstance(ranges, (list, tuple))
        and len(ranges) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ranges)
    ):
        pairs = [tuple(ranges)] * n_var
    elif isinstance(ranges, (list, tuple)) and len(ranges) == n_var:
        pairs = [tuple(r) for r in ranges]
    else:
        raise ValueError(f"ranges must be (low, high) or one (low, high) per variable ({n_var}), got {ranges!r}")
    for index, pair in enumerate(pairs):
        if len(pair) != 2 or not float(pair[0]) < float(pair[1]):
            raise ValueError(f"ranges[{index}] must be (low, high) with low < high, got {pair!r}")
    return [(float(low), float(high)) for low, high in pairs]


def create_dataset(
    f: Callable[[torch.Tensor], torch.Tensor],
    n_var: int = 2,
    ranges: Sequence = (-1.0, 1.0),
    train_num: int = 1000,
    test_num: int = 1000,
    *,
    normalize_input: bool = False,
    normalize_label: bool = False,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Sample inputs uniformly in ``ranges`` and label them with ``f``.

    ``f`` takes ``(N, n_var)`` and returns ``(N, n_out)`` or ``(N,)``. Returns pykan's dict with
    ``train_input`` ``(train_num, n_var)``, ``train_label`` ``(train_num, n_out)``, ``test_input``
    and ``test_label``. Sampling uses a private generator seeded by ``seed``. With
    ``normalize_*`` the inputs / labels are standardised with the training set's mean and std
    (kept as ``mean_input``, ``std_input``, ``mean_label``, ``std_label``).
    """
    if not isinstance(n_var, int) or n_var < 1:
        raise ValueError(f"n_var must be a positive int, got {n_var!r}")
    for name, count in (("train_num", train_num), ("test_num", test_num)):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"{name} must be a positive int, got {count!r}")
    dtype = dtype or torch.get_default_dtype()
    bounds = torch.tensor(_ranges(ranges, n_var), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        unit = torch.rand(count, n_var, generator=generator, dtype=torch.float64)
        x = (bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * unit).to(dtype=dtype, device=device)
        y = f(x)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"f must return a torch.Tensor, got {type(y).__name__}")
        if y.dim() == 1:
            y = y.unsqueeze(1)
        if y.dim() != 2 or y.shape[0] != count:
            raise ValueError(f"f must return (N, n_out) or (N,) for N = {count} inputs, got shape {tuple(y.shape)}")
        if not torch.isfinite(y).all():
            raise ValueError("f returned NaN or infinite values on the sampled inputs; narrow ranges")
        return x, y.to(dtype)

    train_x, train_y = draw(train_num)
    test_x, test_y = draw(test_num)
    data = {"train_input": train_x, "train_label": train_y, "test_input": test_x, "test_label": test_y}
    for part, flag in (("input", normalize_input), ("label", normalize_label)):
        if flag:
            mean = data[f"train_{part}"].mean(0, keepdim=True)
            std = data[f"train_{part}"].std(0, keepdim=True).clamp_min(torch.finfo(dtype).eps)
            for split in ("train", "test"):
                data[f"{split}_{part}"] = (data[f"{split}_{part}"] - mean) / std
            data[f"mean_{part}"], data[f"std_{part}"] = mean, std
    return data


def _exp_sin_square(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.sin(math.pi * x[:, [0]]) + x[:, [1]] ** 2)


def _product(x: torch.Tensor) -> torch.Tensor:
    return x[:, [0]] * x[:, [1]]


_PAPER_FUNCTIONS = {
    # the paper's running example (Fig 2.3 and the README demo)
    "exp_sin": (_exp_sin_square, 2),
    "xy": (_product, 2),
}


def paper_function(name: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """A named toy function of the paper and its number of variables, e.g. ``"exp_sin"``."""
    if name not in _PAPER_FUNCTIONS:
        raise ValueError(f"name must be one of {sorted(_PAPER_FUNCTIONS)}, got {name!r}")
    return _PAPER_FUNCTIONS[name]
