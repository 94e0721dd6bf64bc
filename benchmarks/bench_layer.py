"""KANLinear against nn.Linear(in * (G + k), out), the dense work an exact B-spline KAN does.

Forward and forward + backward (input requires grad, as in a hidden layer; every module's and
input's gradients cleared before each step, as an optimizer's ``zero_grad`` does), timed in
interleaved rounds in one run and reported as ratios to the linear: each the median over the
rounds of the two times in the same round, each candidate timed beside its linear, so that a
slow spell of a shared machine moves both sides of a ratio; memory is what autograd keeps alive
for the backward pass. "adapted" is the same layer after ``update_grid`` on skewed samples
(non-uniform knots, the general path a trained KAN runs on). Beside them, in the same run:
an efficient-kan-style dense layer (every basis by the full Cox-de Boor recursion, then two
matrix products; our own code), an MLP with the KAN layer's parameter count (in -> h -> out),
and, with ``--pykan-python``, pykan 0.2.8's KANLayer (timed in its own interpreter against
its own nn.Linear). "vs own G=5" compares kanlab's fwd+bwd with its own at G = 5, same shape,
timed beside it in the same rounds (a paired ratio too).
kanlab's columns come twice: the default path (the compiled kernel that installing builds
and the first forward loads: ``kanlab.native``), and the pure-torch path that runs where no
kernel fits (``native.disabled()``; ``--no-compiled`` leaves the default path's columns out).
Prints a markdown table and writes its section of RESULTS.md.

    .venv/bin/python benchmarks/bench_layer.py [--pykan-python .venv-pykan/bin/python]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from common import DenseCoxDeBoor, interleaved_samples, markdown_table, paired_ratio, saved_bytes, write_section  # noqa: E402

import kanlab  # noqa: E402

SIZES = [(1024, 64, 64, 5), (1024, 256, 256, 5), (4096, 256, 256, 10), (256, 784, 64, 5), (1024, 256, 256, 50),
         (1024, 256, 256, 100), (1024, 5, 1, 5), (1024, 5, 1, 50), (1024, 5, 1, 200)]  # last: the paper's narrow layers
REPEATS = 11  # interleaved rounds per size


def same_size_mlp(layer: kanlab.KANLinear) -> nn.Module:
    """in -> h -> out with about the KAN layer's parameter count, silu between."""
    count = sum(p.numel() for p in (layer.coef, layer.scale_base, layer.scale_sp))
    hidden = max(1, round(count / (layer.in_features + layer.out_features + 1)))
    return nn.Sequential(nn.Linear(layer.in_features, hidden), nn.SiLU(), nn.Linear(hidden, layer.out_features))


def measure(batch: int, n_in: int, n_out: int, grid: int, compiled: bool, k: int = 3, beside_g5: bool = False) -> list:
    """One row of the table; beside_g5: also time the same shape at G = 5 in the same rounds,
    for the "vs own G=5" columns (else they stay empty)."""
    generator = torch.Generator().manual_seed(0)
    layer = kanlab.KANLinear(n_in, n_out, grid=grid, k=k, generator=generator)
    adapted = kanlab.KANLinear(n_in, n_out, grid=grid, k=k, generator=generator)
    adapted.update_grid(torch.rand(4096, n_in, generator=generator) ** 2 * 2 - 1)
    assert layer.uniform_grid and not adapted.uniform_grid
    linear = nn.Linear(n_in * (grid + k), n_out)
    dense, mlp = DenseCoxDeBoor(layer), same_size_mlp(layer)
    x = (torch.rand(batch, n_in, generator=generator) * 2 - 1).requires_grad_()
    torch.testing.assert_close(dense(x), layer(x), rtol=1e-4, atol=1e-5)  # the same function
    wide = torch.rand(batch, n_in * (grid + k), generator=generator).requires_grad_()

    def forward(module, inputs, compiled=False):
        def run():
            with torch.no_grad(), kanlab.native.use(compiled):
                module(inputs)
        return run

    def train_step(module, inputs, compiled=False):
        def run():  # a training step's forward and backward: gradients cleared first, as optimizers do
            module.zero_grad(set_to_none=True)
            inputs.grad = None
            with kanlab.native.use(compiled):
                module(inputs).sum().backward()
        return run

    # each candidate beside the linear it is divided by, so that a round's ratio is of neighbours;
    # with beside_g5, the same shape at G = 5 right after the step it is compared with
    own_g5 = kanlab.KANLinear(n_in, n_out, grid=5, k=k, generator=generator) if beside_g5 else None
    candidates = {"kan_fwd": forward(layer, x)}
    if compiled:
        candidates["kan_fwd_c"] = forward(layer, x, True)
    candidates["lin_fwd"] = forward(linear, wide)
    if compiled:
        candidates["kan_step_c"] = train_step(layer, x, True)
        if beside_g5:
            candidates["own_g5_step_c"] = train_step(own_g5, x, True)
    candidates["lin_step"] = train_step(linear, wide)
    candidates["kan_step"] = train_step(layer, x)
    if beside_g5:
        candidates["own_g5_step"] = train_step(own_g5, x)
    if compiled:
        candidates["adapted_step_c"] = train_step(adapted, x, True)
    candidates.update(adapted_step=train_step(adapted, x), mlp_step=train_step(mlp, x),
                      dense_step=train_step(dense, x))
    samples = interleaved_samples(candidates, repeats=REPEATS)

    def linear_ratio(name: str) -> str:
        return f"{paired_ratio(samples, name, 'lin_fwd' if 'fwd' in name else 'lin_step'):.2f}x"

    with kanlab.native.use(False):  # the kernel keeps the same tensors (the features and x)
        kan_mem = saved_bytes(lambda: layer(x))
    lin_mem = saved_bytes(lambda: linear(wide))
    row = [f"({batch}, {n_in}, {n_out}, G={grid})"] + [linear_ratio(name) for name in
                                                          ("kan_fwd", "kan_step", "adapted_step")]
    if compiled:
        row += [linear_ratio(name) for name in ("kan_fwd_c", "kan_step_c", "adapted_step_c")]
    row += [
        linear_ratio("dense_step"),
        linear_ratio("mlp_step"),
        f"{kan_mem / lin_mem:.2f}x",
        f"{kan_mem / 2**20:.1f} / {lin_mem / 2**20:.1f}",
    ]
    for path in ("", "_c")[: 1 + compiled]:  # the torch path, then the compiled kernel
        row.append(f"{paired_ratio(samples, 'kan_step' + path, 'own_g5_step' + path):.2f}x" if beside_g5 else "")
    return row


def pykan_ratios(python: str) -> dict:
    """pykan's KANLayer fwd+bwd / nn.Linear per size, measured by its own interpreter."""
    done = subprocess.run([python, str(pathlib.Path(__file__).parent / "pykan_layer.py"), json.dumps(SIZES),
                           str(torch.get_num_threads())], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pykan-python", help="python of an environment with pykan==0.2.8")
    parser.add_argument("--no-compiled", action="store_true", help="leave out the compiled kernel's columns")
    args = parser.parse_args()
    compiled = not args.no_compiled and kanlab.native.load()  # the installed kernel (built here if none is)
    with_g5 = {(b, i, o) for b, i, o, g in SIZES if g == 5}
    rows = [measure(*size, compiled, beside_g5=size[3] != 5 and size[:3] in with_g5) for size in SIZES]
    theirs = pykan_ratios(args.pykan_python) if args.pykan_python else {}
    for row in rows:
        if theirs:
            row.append(f"{theirs[row[0]]:.1f}x")
    header = ["(batch, in, out, G)", "torch path: forward / linear", "torch path: fwd+bwd / linear",
              "torch path: fwd+bwd adapted grid / linear"]
    if compiled:
        header += ["default: forward / linear", "default: fwd+bwd / linear", "default: fwd+bwd adapted / linear"]
    header += ["dense Cox-de Boor (efficient-kan style) / linear", "same-size MLP / linear", "memory / linear",
               "memory MiB (kan / linear)", "torch path: fwd+bwd vs own G=5"]
    header += ["default: fwd+bwd vs own G=5"] if compiled else []
    header += ["pykan 0.2.8 fwd+bwd / linear"] if theirs else []
    table = markdown_table(header, rows)
    text = (
        "## KANLinear vs nn.Linear(in*(G+k), out)\n\n"
        f"`.venv/bin/python benchmarks/bench_layer.py`: torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}, "
        f"{kanlab.native.status()}, "
        f"float32, k=3, input requires grad, gradients cleared before each step; {REPEATS} interleaved rounds, "
        "each ratio to the linear the median over rounds of the two sides' times in the same round "
        "(\"vs own G=5\" likewise, beside the same layer shape at G = 5 in the same rounds); "
        "memory = tensors kept for backward "
        "(torch path).\n\n"
        + table + "\n"
    )
    print(text)
    write_section("layer", text)


if __name__ == "__main__":
    main()
