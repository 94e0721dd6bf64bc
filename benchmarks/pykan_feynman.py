"""Run by pykan's own interpreter: pykan 0.2.8's workflow on one Feynman equation's data saved
by bench_feynman.py. Train [n, 5, 1] with lamb 1e-3 (its tutorial), prune, train, refine to
grid 10, train, auto_symbolic with its default library, train; 50 LBFGS steps per stage.
Prints one JSON line: the formula (pykan's own variables x_1 ..) and the seconds.
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import time

import torch
from kan import KAN

torch.set_default_dtype(torch.float64)
request = json.loads(sys.argv[1])
data = torch.load(request["data"])
os.chdir(tempfile.mkdtemp())  # pykan 0.2.8 logs its history into ./model/ even with auto_save=False
os.makedirs("model", exist_ok=True)
n = data["train_input"].shape[1]
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    model = KAN(width=[n, 5, 1], grid=5, k=3, seed=0, auto_save=False)
    model.fit(data, opt="LBFGS", steps=50, lamb=1e-3)
    model = model.prune()
    model.fit(data, opt="LBFGS", steps=50)
    model = model.refine(10)
    model.fit(data, opt="LBFGS", steps=50)
    model.auto_symbolic()
    model.fit(data, opt="LBFGS", steps=50)
    formula = model.symbolic_formula()[0][0]
print(json.dumps({"formula": str(formula), "seconds": time.perf_counter() - start}))
