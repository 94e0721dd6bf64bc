"""Shared benchmark helpers: interleaved repetitions, medians, paired ratios, saved-for-backward bytes."""

from __future__ import annotations

import pathlib
import re
import statistics
import time
from typing import Callable

import torch
from torch import nn

import kanlab


def interleaved_samples(candidates: dict[str, Callable[[], None]], repeats: int = 7,
                        inner: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each candidate in each of ``repeats`` rounds, timed round-robin (in the
    dict's order) so machine noise hits all alike."""
    for run in candidates.values():  # warm-up
        run()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            for _ in range(inner):
                run()
            samples[name].append((time.perf_counter() - start) / inner)
    return samples


def interleaved_medians(candidates: dict[str, Callable[[], None]], repeats: int = 7, inner: int = 3) -> dict[str, float]:
    """Median seconds per call of each candidate, timed round-robin so machine noise hits all alike."""
    samples = interleaved_samples(candidates, repeats, inner)
    return {name: statistics.median(values) for name, values in samples.items()}


def paired_ratio(samples: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of numerator's time / denominator's in the same round: a slow spell
    of a shared machine lands on both sides of a round's ratio, where it can move one median alone."""
    return statistics.median(a / b for a, b in zip(samples[numerator], samples[denominator]))


def saved_bytes(run: Callable[[], torch.Tensor]) -> int:
    """Bytes autograd keeps alive for the backward pass of ``run()`` (plus its output)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    seen[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()
    return sum(seen.values())


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


RESULTS = pathlib.Path(__file__).parent / "RESULTS.md"


def write_section(name: str, text: str, path: pathlib.Path = RESULTS) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md, keeping the other sections."""
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    current = path.read_text() if path.exists() else "# Benchmark results\n\nWritten by the scripts in this folder; see the README for the commands.\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    updated = pattern.sub(lambda _: block, current) if pattern.search(current) else current.rstrip() + "\n\n" + block + "\n"
    path.write_text(updated)


def warm_up(compiled: bool) -> None:
    """A few tiny fits on each path first, so no timed run pays one-time start-up costs."""
    x = torch.rand(64, 2, dtype=torch.float64)
    data = {"train_input": x, "train_label": x[:, :1] * x[:, 1:]}
    for use_kernel in {False, compiled}:
        with kanlab.native.use(use_kernel):
            kanlab.KAN([2, 2, 1], grid=3, seed=0, dtype=torch.float64).fit(data, steps=2, progress=False)


class DenseCoxDeBoor(nn.Module):
    """The efficient-kan-style baseline: all G + k bases of every input by the dense Cox-de
    Boor recursion, then silu(x) @ W_base + bases @ W_spline (same function as KANLinear)."""

    def __init__(self, layer: kanlab.KANLinear) -> None:
        super().__init__()
        self.register_buffer("knots", layer.grid.clone())
        self.k = layer.k
        self.base_weight = nn.Parameter(layer.scale_base.detach().clone())
        self.spline_weight = nn.Parameter((layer.scale_sp.unsqueeze(-1) * layer.coef).detach().reshape(layer.out_features, -1))

    def forward(self, x):
        bases = kanlab.splines.bspline_basis_reference(x, self.knots, self.k)
        return nn.functional.linear(nn.functional.silu(x), self.base_weight) + nn.functional.linear(
            bases.reshape(x.shape[0], -1), self.spline_weight)
