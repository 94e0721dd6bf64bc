"""The paper's workflow (the README demo) and ``auto_symbolic`` alone: kanlab vs pykan 0.2.8.

Workflow: KAN([2, 5, 1]) on exp(sin(pi x) + y^2), float64, 1000 train / 1000 test points:
train with sparsification -> prune -> train -> refine 5 -> 10 -> train -> auto_symbolic
(pykan's hellokan library of 10 functions) -> train -> formula, LBFGS ``--steps`` steps per
training stage. pykan starts from kanlab's initial parameters and runs the same steps on the
same data (each library with its own regulariser definition). ``auto_symbolic`` alone: both
snap all 15 edges of the same trained [2, 5, 1] network (kanlab's, after the sparsified
training, copied into pykan). Runs are interleaved per seed; medians over ``--seeds``. kanlab
runs its default path (the compiled kernel that installing builds and the first forward loads:
``kanlab.native``; ``--no-compiled``: without), and its pure-torch path's total is reported
beside it.

    .venv/bin/python benchmarks/bench_workflow.py --pykan-python .venv-pykan/bin/python
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench_pipeline import pykan_layout  # noqa: E402
from common import markdown_table, warm_up, write_section  # noqa: E402

import kanlab  # noqa: E402
from kanlab.functions import HELLOKAN_LIBRARY  # noqa: E402

HERE = pathlib.Path(__file__).parent


def with_mask(model) -> list[dict]:
    layout = pykan_layout(model)
    for values, layer in zip(layout, model.layers):
        values["mask"] = layer.mask.T.contiguous()
    return layout


def run_kanlab(data, seed, steps, lamb, refine):
    stages = []
    model = kanlab.KAN([2, 5, 1], grid=5, k=3, seed=seed, dtype=torch.float64)

    def rmse(m):
        with torch.no_grad():
            return float(torch.sqrt(torch.mean((m(data["test_input"]) - data["test_label"]) ** 2)))

    def stage(name, action):
        nonlocal model
        begin = time.perf_counter()
        result = action()
        if isinstance(result, kanlab.KAN):
            model = result
        stages.append([name, time.perf_counter() - begin, rmse(model)])

    stage("train, sparsified", lambda: model.fit(data, steps=steps, lamb=lamb, log=steps, progress=False))
    trained = model.copy()
    stage("prune", lambda: model.prune())
    width = [w[0] for w in model.width]
    stage("train", lambda: model.fit(data, steps=steps, log=steps, progress=False))
    stage("refine", lambda: model.refine(refine))
    stage("train", lambda: model.fit(data, steps=steps, log=steps, progress=False))
    stage("auto_symbolic", lambda: model.auto_symbolic(lib=list(HELLOKAN_LIBRARY)))
    stage("train", lambda: model.fit(data, steps=steps, log=steps, progress=False))
    formula = str(model.symbolic_formula(round_digits=4)[0])
    # auto_symbolic alone on the trained network
    begin = time.perf_counter()
    trained.auto_symbolic(lib=list(HELLOKAN_LIBRARY))
    auto_seconds = time.perf_counter() - begin
    return {"stages": stages, "width": width, "formula": formula, "auto_symbolic": auto_seconds, "trained": trained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pykan-python", required=True, help="python of an environment with pykan==0.2.8")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--lamb", type=float, default=1e-3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--no-compiled", action="store_true", help="kanlab without its compiled kernel")
    args = parser.parse_args()
    if args.pykan_python:  # pykan runs in a scratch folder: a relative path must not depend on it
        args.pykan_python = str(pathlib.Path(args.pykan_python).absolute())
    compiled = not args.no_compiled and kanlab.native.load()
    warm_up(compiled)
    seeds = [int(v) for v in args.seeds.split(",")]
    function, n_var = kanlab.paper_function("exp_sin")
    ours, theirs, plain = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            data = kanlab.create_dataset(function, n_var=n_var, train_num=1000, test_num=1000, seed=seed, dtype=torch.float64)
            with kanlab.native.use(compiled):
                result = run_kanlab(data, seed, args.steps, args.lamb, 10)
            ours.append(result)
            if compiled:
                with kanlab.native.use(False):
                    plain.append(run_kanlab(data, seed, args.steps, args.lamb, 10))
            path = pathlib.Path(folder) / f"data{seed}.pt"
            initial = kanlab.KAN([2, 5, 1], grid=5, k=3, seed=seed, dtype=torch.float64)
            torch.save({**data, "initial": pykan_layout(initial), "trained": with_mask(result["trained"])}, path)
            request = {"data": str(path), "seed": seed, "steps": args.steps, "lamb": args.lamb, "grid": 5,
                       "refine": 10, "lib": list(HELLOKAN_LIBRARY)}
            done = subprocess.run([args.pykan_python, str(HERE / "pykan_workflow.py"), json.dumps(request)],
                                  capture_output=True, text=True, cwd=folder)
            if done.returncode:
                raise SystemExit(f"pykan run failed:\n{done.stderr[-3000:]}")
            theirs.append(json.loads(done.stdout.strip().splitlines()[-1]))

    def median(runs, index, column):
        values = [run["stages"][index][column] for run in runs if run["stages"][index][column] == run["stages"][index][column]]
        return statistics.median(values) if values else float("nan")

    rows = []
    for index, (name, *_rest) in enumerate(ours[0]["stages"]):
        k, p = median(ours, index, 1), median(theirs, index, 1)
        rows.append([name, f"{k:.2f}", f"{median(ours, index, 2):.1e}", f"{p:.2f}", f"{median(theirs, index, 2):.1e}",
                     f"{p / k:.1f}x" if k > 0.005 else "-"])
    complete = [t for t in theirs if not t.get("failure")]
    total_ours = statistics.median(sum(s[1] for s in run["stages"]) for run in ours)
    total_theirs = statistics.median(sum(s[1] for s in run["stages"]) for run in complete) if complete else float("nan")
    rows.append(["**total**", f"{total_ours:.1f}", "", f"{total_theirs:.1f}", "", f"**{total_theirs / total_ours:.1f}x**"])
    plain_line = ""
    if plain:
        total_plain = statistics.median(sum(s[1] for s in run["stages"]) for run in plain)
        plain_line = (f"kanlab above runs its default path ({kanlab.native.status()}); its pure-torch path "
                      f"(where no kernel fits) took {total_plain:.1f} s "
                      f"in the same run ({total_theirs / total_plain:.1f}x faster than pykan; final test RMSE "
                      + ", ".join(f"{run['stages'][-1][2]:.1e}" for run in plain) + ").\n\n")
    auto_ours = statistics.median(run["auto_symbolic"] for run in ours)
    auto_theirs = statistics.median(run["auto_symbolic"] for run in theirs)
    per_seed = "\n".join(
        f"- seed {seed}: kanlab {o['width']} `{o['formula']}` (test RMSE {o['stages'][-1][2]:.1e}); "
        + (f"pykan {t['width']} `{t['formula']}` (test RMSE {t['stages'][-1][2]:.1e})" if not t.get("failure")
           else f"pykan crashed ({t['failure'][:200]})")
        for seed, o, t in zip(seeds, ours, theirs)
    )
    command = "`.venv/bin/python benchmarks/bench_workflow.py --pykan-python .venv-pykan/bin/python`"
    text = (
        "## The paper's workflow (the demo) and auto_symbolic, kanlab vs pykan 0.2.8\n\n"
        f"{command}: KAN[2, 5, 1] on exp(sin(pi x) + y^2), float64, 1000 train / 1000 test points, "
        f"{args.steps} LBFGS steps per training stage, lamb={args.lamb:g}, hellokan's 10-function library; "
        f"medians over seeds {args.seeds}, pykan's total over the seeds where it did not crash (interleaved; torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}).\n\n"
        + markdown_table(["stage", "kanlab s", "kanlab test RMSE", "pykan s", "pykan test RMSE", "speed-up"], rows)
        + "\n\n" + plain_line + "auto_symbolic alone on the same trained [2, 5, 1] network (15 edges x 10 functions): "
        f"kanlab {auto_ours:.2f} s, pykan {auto_theirs:.1f} s: **{auto_theirs / auto_ours:.0f}x faster**\n\n"
        f"Pruned width and formula (rounded to 4 digits) per seed:\n\n{per_seed}\n"
    )
    print(text)
    write_section("workflow", text)


if __name__ == "__main__":
    main()
