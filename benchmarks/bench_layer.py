"""KANLinear against nn.Linear(in * (G + k), out), the dense work an exact B-spline KAN does.

Forward and forward + backward (input requires grad, as in a hidden layer), medians of
interleaved repetitions in one run, reported as ratios; memory is what autograd keeps alive
for the backward pass. "adapted" is the same layer after ``update_grid`` on skewed samples
(non-uniform knots, the general path a trained KAN runs on). Prints a markdown table and
writes its section of RESULTS.md.

    .venv/bin/python benchmarks/bench_layer.py
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from common import interleaved_medians, markdown_table, saved_bytes, write_section  # noqa: E402

import kanlab  # noqa: E402

SIZES = [(1024, 64, 64, 5), (1024, 256, 256, 5), (4096, 256, 256, 10)]


def measure(batch: int, n_in: int, n_out: int, grid: int, k: int = 3) -> list[str]:
    generator = torch.Generator().manual_seed(0)
    layer = kanlab.KANLinear(n_in, n_out, grid=grid, k=k, generator=generator)
    adapted = kanlab.KANLinear(n_in, n_out, grid=grid, k=k, generator=generator)
    adapted.update_grid(torch.rand(4096, n_in, generator=generator) ** 2 * 2 - 1)
    assert layer.uniform_grid and not adapted.uniform_grid
    linear = nn.Linear(n_in * (grid + k), n_out)
    x = (torch.rand(batch, n_in, generator=generator) * 2 - 1).requires_grad_()
    wide = torch.rand(batch, n_in * (grid + k), generator=generator).requires_grad_()

    def forward(module, inputs):
        def run():
            with torch.no_grad():
                module(inputs)
        return run

    def train_step(module, inputs):
        def run():
            module(inputs).sum().backward()
        return run

    times = interleaved_medians(
        {
            "kan_fwd": forward(layer, x),
            "lin_fwd": forward(linear, wide),
            "kan_step": train_step(layer, x),
            "lin_step": train_step(linear, wide),
            "adapted_step": train_step(adapted, x),
        }
    )
    kan_mem = saved_bytes(lambda: layer(x))
    lin_mem = saved_bytes(lambda: linear(wide))
    return [
        f"({batch}, {n_in}, {n_out}, G={grid})",
        f"{times['kan_fwd'] / times['lin_fwd']:.2f}x",
        f"{times['kan_step'] / times['lin_step']:.2f}x",
        f"{times['adapted_step'] / times['lin_step']:.2f}x",
        f"{kan_mem / lin_mem:.2f}x",
        f"{kan_mem / 2**20:.1f} / {lin_mem / 2**20:.1f}",
    ]


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    rows = [measure(*size) for size in SIZES]
    header = [
        "(batch, in, out, G)", "forward / linear", "fwd+bwd / linear", "fwd+bwd adapted grid / linear",
        "memory / linear", "memory MiB (kan / linear)",
    ]
    table = markdown_table(header, rows)
    text = (
        "## KANLinear vs nn.Linear(in*(G+k), out)\n\n"
        f"`.venv/bin/python benchmarks/bench_layer.py`: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        "float32, k=3, input requires grad; medians of interleaved runs; memory = tensors kept for backward.\n\n"
        + table + "\n"
    )
    print(text)
    write_section("layer", text)


if __name__ == "__main__":
    main()
