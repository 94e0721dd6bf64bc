"""Run by pykan's own interpreter: the paper's workflow (the kanlab demo) with pykan 0.2.8, and
``auto_symbolic`` alone on a trained network, on data and parameters saved by bench_workflow.py.

Prints one JSON line: per stage (name, seconds, test RMSE; NaN after a crash, which is
reported), the pruned width, the formula, and the seconds of ``auto_symbolic`` on the given
trained [2, 5, 1] network.
"""

import contextlib
import io
import json
import os
import sys
import time

import torch
from kan import KAN
from kan.utils import ex_round

torch.set_default_dtype(torch.float64)
request = json.loads(sys.argv[1])
data = torch.load(request["data"])
initial, trained = data.pop("initial"), data.pop("trained")
lib, steps = request["lib"], request["steps"]


def build(parameters, grid):
    model = KAN(width=[2, 5, 1], grid=grid, k=3, seed=request["seed"], auto_save=False)
    with torch.no_grad():
        for layer, values in zip(model.act_fun, parameters):
            for name, value in values.items():
                getattr(layer, name).copy_(value)
    return model


def rounded(expr, seconds=30):
    """pykan's ex_round of the formula, given up after ``seconds`` (sympy's rounding of some
    formulas, with huge or tiny constants, ran for over 10 minutes): then sympy's 4-digit N."""
    import signal

    def give_up(*_):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        return str(ex_round(expr, 4))
    except TimeoutError:
        import sympy

        return str(sympy.N(expr, 4)) + " (ex_round gave up)"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def rmse(model):
    with torch.no_grad():
        return float(torch.sqrt(torch.mean((model(data["test_input"]) - data["test_label"]) ** 2)))


os.makedirs("model", exist_ok=True)  # pykan logs some operations there whatever auto_save says (cwd is scratch)
stages, quiet = [], io.StringIO()
with contextlib.redirect_stdout(quiet):
    model = build(initial, request["grid"])

    failure = None

    def stage(name, action):
        """Run one step; after a crash (pykan has several) the remaining steps are skipped."""
        global model, failure
        if failure is not None:
            stages.append([name, float("nan"), float("nan")])
            return
        begin = time.perf_counter()
        try:
            result = action()
        except Exception as error:  # noqa: BLE001 - reported, not hidden
            failure = f"{name}: {type(error).__name__}: {error}"
            stages.append([name, float("nan"), float("nan")])
            return
        if isinstance(result, KAN.__mro__[0]):
            model = result
            model.auto_save = False
        stages.append([name, time.perf_counter() - begin, rmse(model)])

    stage("train, sparsified", lambda: model.fit(data, opt="LBFGS", steps=steps, lamb=request["lamb"], log=steps))
    stage("prune", lambda: model.prune())
    width = [w if isinstance(w, int) else w[0] for w in model.width]
    stage("train", lambda: model.fit(data, opt="LBFGS", steps=steps, log=steps))
    stage("refine", lambda: model.refine(request["refine"]))
    stage("train", lambda: model.fit(data, opt="LBFGS", steps=steps, log=steps))
    stage("auto_symbolic", lambda: model.auto_symbolic(lib=lib))
    stage("train", lambda: model.fit(data, opt="LBFGS", steps=steps, log=steps))
    formula = rounded(model.symbolic_formula()[0][0]) if failure is None else f"(crashed in {failure})"

    # auto_symbolic alone, on the trained network kanlab hands over
    network = build(trained, request["grid"])
    network(data["train_input"])  # pykan reads the edge values of the last forward pass
    begin = time.perf_counter()
    network.auto_symbolic(lib=lib)
    auto_seconds = time.perf_counter() - begin
print(json.dumps({"stages": stages, "width": width, "formula": formula, "auto_symbolic": auto_seconds, "failure": failure}))
