"""Run by pykan's own interpreter: the demo pipeline with pykan 0.2.8 on data saved by bench_pipeline.py,
starting from the initial parameters saved with it (kanlab's initial model, in pykan's layout).

Prints one JSON line: seconds for the import, per stage (grid, seconds, train RMSE, test RMSE).
"""

import json
import sys
import time

start = time.perf_counter()
import torch  # noqa: E402
from kan import KAN  # noqa: E402

import_seconds = time.perf_counter() - start
torch.set_default_dtype(torch.float64)
request = json.loads(sys.argv[1])
data = torch.load(request["data"])
initial = data.pop("initial")
model, stages = None, []
for grid in request["grids"]:
    begin = time.perf_counter()
    if model is None:
        model = KAN(width=request["width"], grid=grid, k=3, seed=request["seed"], auto_save=False)
        with torch.no_grad():
            for layer, start in zip(model.act_fun, initial):
                for name, value in start.items():
                    getattr(layer, name).copy_(value)
    else:
        model = model.refine(grid)
        model.auto_save = False  # pykan's refine turns checkpoint writing back on
    history = model.fit(data, opt="LBFGS", steps=request["steps"], log=request["steps"])
    seconds = time.perf_counter() - begin
    stages.append([grid, seconds, float(history["train_loss"][-1]), float(history["test_loss"][-1])])
print(json.dumps({"import": import_seconds, "stages": stages}))
