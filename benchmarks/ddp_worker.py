"""Run by bench_ddp.py under torchrun: time kanlab.distributed.fit on one shared problem.

Prints one JSON line on rank 0: world size, seconds of training, rows processed per second.
"""

import json
import sys
import time

import torch

import kanlab
from kanlab import distributed

request = json.loads(sys.argv[1])
torch.set_num_threads(request["threads"])
rank, world = distributed.init("gloo", timeout_seconds=120)
g = torch.Generator().manual_seed(0)
x = torch.rand(request["rows"], request["inputs"], generator=g) * 2 - 1
y = torch.sin(torch.pi * x[:, :1]) + (x[:, 1:] ** 2).sum(1, keepdim=True)
model = kanlab.KAN([request["inputs"], request["hidden"], 1], grid=request["grid"], seed=0)
options = dict(opt="Adam", lr=0.01, steps=request["steps"], update_grid=False, log=request["steps"], progress=False)
distributed.fit(model, (x, y), **{**options, "steps": 2})  # warm-up
begin = time.perf_counter()
distributed.fit(model, (x, y), **options)
seconds = time.perf_counter() - begin
if rank == 0:
    print(json.dumps({"world": world, "seconds": seconds, "rows_per_second": request["rows"] * request["steps"] / seconds}))
torch.distributed.destroy_process_group()
