"""Run by pykan's own interpreter (bench_layer.py --pykan-python): pykan 0.2.8's KANLayer forward +
backward against nn.Linear(in*(G+k), out) in the same process, per size, in three interleaved
rounds: the median over the rounds of the two times' ratio in the same round, as bench_layer.py.

Prints one JSON line: {"(batch, in, out, G)": ratio to linear}.
"""

import json
import statistics
import sys
import time

import torch
from kan.KANLayer import KANLayer

torch.set_num_threads(int(sys.argv[2]))
sizes = json.loads(sys.argv[1])
result = {}
for batch, n_in, n_out, grid in sizes:
    layer = KANLayer(in_dim=n_in, out_dim=n_out, num=grid, k=3)
    linear = torch.nn.Linear(n_in * (grid + 3), n_out)
    x = (torch.rand(batch, n_in) * 2 - 1).requires_grad_()
    wide = torch.rand(batch, n_in * (grid + 3)).requires_grad_()

    def step(module, inputs, output):
        def run():  # gradients cleared first, as optimizers do (and as bench_layer.py times kanlab)
            module.zero_grad(set_to_none=True)
            inputs.grad = None
            output(module(inputs)).sum().backward()
        return run

    runs = {"kan": step(layer, x, lambda out: out[0]), "lin": step(linear, wide, lambda out: out)}
    samples = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(3):
        for name, run in runs.items():
            begin = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - begin)
    ratios = [kan / lin for kan, lin in zip(samples["kan"], samples["lin"])]
    result[f"({batch}, {n_in}, {n_out}, G={grid})"] = statistics.median(ratios)
print(json.dumps(result))
