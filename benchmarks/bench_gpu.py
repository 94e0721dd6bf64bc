"""KANLinear on a CUDA GPU (its default path there: the Triton kernels of ``kanlab.gpu``) against
``nn.Linear(in * (G + k), out)`` and the dense form, forward + backward, float32.

At (batch, in, out) = (4096, 1024, 1024) by default, for G = 5, 10, 50, 100, with k = 3:

- ``kanlab``: ``KANLinear`` as a user builds it (knots moved by its grid keeping on the first
  training forward, so general knots, the path a trained layer runs on);
- ``kanlab, dense``: the same layer on the dense torch path (basis features, then one matrix
  product), which is also what every layer ran on CUDA before the kernels;
- ``efficient-kan form``: every basis by the full Cox-de Boor recursion on the same knots, then
  ``silu(x) @ W_base + bases @ W_spline`` (our own code, efficient-kan's arithmetic);
- ``nn.Linear``: the same multiply-adds as the dense spline product, on cuBLAS.

Each step: forward, ``sum`` backward with the input requiring grad, gradients cleared. Times are
CUDA-event medians over interleaved rounds; ratios are to ``nn.Linear`` in the same round. Then the
peak memory of one step at G = 200 (``torch.cuda.max_memory_allocated`` above what the modules and
input hold). TF32 stays as torch's default (off). Prints a markdown table.

    .venv/bin/python benchmarks/bench_gpu.py [--batch 4096 --width 1024 --grids 5,10,50,100 --memory-grid 200]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from common import DenseCoxDeBoor  # noqa: E402

import kanlab  # noqa: E402
from kanlab import gpu  # noqa: E402


class DensePath(nn.Module):
    """A KANLinear forced onto the dense torch path."""

    def __init__(self, layer: kanlab.KANLinear) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        takes = gpu.takes
        gpu.takes = lambda *a: False
        try:
            return self.layer(x)
        finally:
            gpu.takes = takes


def step(module: nn.Module, x: torch.Tensor):
    def run():
        for p in module.parameters():
            p.grad = None
        x.grad = None
        module(x).sum().backward()
    return run


def interleaved(candidates: dict, rounds: int, inner: int) -> dict[str, list[float]]:
    """Milliseconds per step of each candidate in each round (CUDA events), round-robin."""
    for run in candidates.values():
        run(), run()
    torch.cuda.synchronize()
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                run()
            end.record()
            torch.cuda.synchronize()
            samples[name].append(start.elapsed_time(end) / inner)
    return samples


def build(batch: int, width: int, grid: int, k: int):
    torch.manual_seed(0)
    layer = kanlab.KANLinear(width, width, grid=grid, k=k, device="cuda")
    x = torch.randn(batch, width, device="cuda")
    layer(x)  # grid keeping: the knots follow x (general knots)
    linear = nn.Linear(width * (grid + k), width, bias=False, device="cuda")
    wide = torch.randn(batch, width * (grid + k), device="cuda", requires_grad=True)
    candidates = {
        "kanlab": step(layer, x.clone().requires_grad_(True)),
        "kanlab, dense": step(DensePath(layer), x.clone().requires_grad_(True)),
        "efficient-kan form": step(DenseCoxDeBoor(layer).cuda(), x.clone().requires_grad_(True)),
        "nn.Linear": step(linear, wide),
    }
    return candidates


def peak_megabytes(run) -> float:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--grids", default="5,10,50,100")
    parser.add_argument("--memory-grid", type=int, default=200)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--inner", type=int, default=3)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA device; none is visible to torch here")
    if not gpu.available():
        sys.exit("bench_gpu.py needs Triton (it comes with torch's CUDA wheels); it is not importable here")
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
          f"batch {args.batch}, {args.width} -> {args.width}, k = {args.k}, float32, TF32 "
          f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}\n")
    names = ["kanlab", "kanlab, dense", "efficient-kan form", "nn.Linear"]
    print("| G | " + " | ".join(f"{n} ms" for n in names) + " | kanlab / nn.Linear | dense / nn.Linear "
          "| efficient-kan / nn.Linear |")
    print("|---" * (len(names) + 4) + "|")
    for grid in (int(g) for g in args.grids.split(",")):
        samples = interleaved(build(args.batch, args.width, grid, args.k), args.rounds, args.inner)
        medians = {name: statistics.median(values) for name, values in samples.items()}
        ratios = [statistics.median(a / b for a, b in zip(samples[name], samples["nn.Linear"]))
                  for name in names[:3]]
        print(f"| {grid} | " + " | ".join(f"{medians[n]:.3f}" for n in names) + " | "
              + " | ".join(f"{r:.2f}x" for r in ratios) + " |", flush=True)
    candidates = build(args.batch, args.width, args.memory_grid, args.k)
    print(f"\npeak memory of one step above the modules and inputs, G = {args.memory_grid}:\n")
    print("| | MiB |\n|---|---|")
    for name in names:
        try:
            print(f"| {name} | {peak_megabytes(candidates[name]):.0f} |", flush=True)
        except torch.OutOfMemoryError:
            print(f"| {name} | out of memory |", flush=True)


if __name__ == "__main__":
    main()
