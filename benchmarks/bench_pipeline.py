"""The README demo pipeline, kanlab vs pykan 0.2.8, on the same data in the same run.

KAN(width) on exp(sin(pi x) + y^2), 1000 train / 1000 test points, float64, LBFGS, grids
refined through ``--grids`` with ``--steps`` steps each (pykan's defaults for grid updates).
pykan runs in its own interpreter (``--pykan-python``), interleaved with kanlab, ``--repeats``
times; times are medians, RMSEs from the last repeat. Writes its section of RESULTS.md.

    .venv/bin/python benchmarks/bench_pipeline.py --pykan-python .venv-pykan/bin/python
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
from common import markdown_table, write_section  # noqa: E402

import kanlab  # noqa: E402

HERE = pathlib.Path(__file__).parent


def run_kanlab(data, width, grids, steps, seed):
    model, stages = None, []
    for grid in grids:
        begin = time.perf_counter()
        model = kanlab.KAN(width, grid=grid, k=3, seed=seed, dtype=torch.float64) if model is None else model.refine(grid)
        history = model.fit(data, opt="LBFGS", steps=steps, log=steps, progress=False)
        stages.append([grid, time.perf_counter() - begin, history["train_loss"][-1], history["test_loss"][-1]])
    return stages


def run_pykan(python, data_path, width, grids, steps, seed):
    request = json.dumps({"data": str(data_path), "width": width, "grids": grids, "steps": steps, "seed": seed})
    done = subprocess.run(  # in the data's scratch folder: pykan may write files where it runs
        [python, str(HERE / "pykan_pipeline.py"), request],
        capture_output=True, text=True, check=True, cwd=data_path.parent,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pykan-python", help="python of an environment with pykan==0.2.8")
    parser.add_argument("--width", default="2,5,1")
    parser.add_argument("--grids", default="5,10,20,50")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width = [int(v) for v in args.width.split(",")]
    grids = [int(v) for v in args.grids.split(",")]
    function, n_var = kanlab.paper_function("exp_sin")
    data = kanlab.create_dataset(function, n_var=n_var, train_num=1000, test_num=1000, seed=args.seed, dtype=torch.float64)

    ours, theirs, imports = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        data_path = pathlib.Path(folder) / "data.pt"
        torch.save(data, data_path)
        for _ in range(args.repeats):
            ours.append(run_kanlab(data, width, grids, args.steps, args.seed))
            if args.pykan_python:
                result = run_pykan(args.pykan_python, data_path, width, grids, args.steps, args.seed)
                theirs.append(result["stages"])
                imports.append(result["import"])

    def total(runs):
        return statistics.median(sum(stage[1] for stage in run) for run in runs)

    rows = []
    for index, grid in enumerate(grids):
        row = [str(grid), f"{statistics.median(r[index][1] for r in ours):.2f}", f"{ours[-1][index][3]:.2e}"]
        if theirs:
            pyk_time = statistics.median(r[index][1] for r in theirs)
            row += [f"{pyk_time:.2f}", f"{theirs[-1][index][3]:.2e}",
                    f"{pyk_time / statistics.median(r[index][1] for r in ours):.1f}x"]
        rows.append(row)
    header = ["grid", "kanlab s", "kanlab test RMSE"] + (["pykan s", "pykan test RMSE", "speed-up"] if theirs else [])
    summary = f"total: kanlab {total(ours):.1f} s"
    if theirs:
        summary += f", pykan {total(theirs):.1f} s (+ {statistics.median(imports):.1f} s import): {total(theirs) / total(ours):.1f}x faster"
    command = "`.venv/bin/python benchmarks/bench_pipeline.py --pykan-python .venv-pykan/bin/python`"
    text = (
        f"## Demo pipeline: KAN{width} on exp(sin(pi x) + y^2), {args.steps} LBFGS steps per grid\n\n"
        f"{command}: float64, 1000 train / 1000 test points, seed {args.seed}, medians of {args.repeats} "
        f"interleaved runs (torch {torch.__version__}, {torch.get_num_threads()} threads).\n\n"
        + markdown_table(header, rows) + f"\n\n{summary}\n"
    )
    print(text)
    write_section(f"pipeline-{'-'.join(map(str, width))}", text)


if __name__ == "__main__":
    main()
