"""kanlab.discover beside pykan 0.2.8's workflow on Feynman equations (the paper's Table 2 set):
the same 1000 points per equation (ranges from kanlab/experiments/data), each tool's formula,
whether it is recovered (relative RMSE below 1e-6 on 1000 fresh points, as `kanlab reproduce
feynman` counts it) and its seconds. pykan runs in its own interpreter (``--pykan-python``),
with a time limit per equation.

    python benchmarks/bench_feynman.py --pykan-python .venv-pykan/bin/python [--names I.12.11,II.38.3]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import sympy
import torch

import kanlab
from kanlab.experiments._feynman import equation, table


def relative_error(formula: str, names, x: torch.Tensor, y: torch.Tensor) -> float:
    symbols = sympy.symbols(names)
    expr = sympy.sympify(formula, locals={name: s for name, s in zip(names, symbols)})
    with np.errstate(all="ignore"):
        values = np.broadcast_to(np.asarray(sympy.lambdify(symbols, expr, "numpy")(*x.numpy().T), dtype=float),
                                 y.shape[0])
    value = float(np.sqrt(np.mean((values - y[:, 0].numpy()) ** 2)) / max(float(y.std()), 1e-300))
    return value if math.isfinite(value) else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pykan-python", required=True)
    parser.add_argument("--names", default="I.12.11,I.13.12,I.16.6,I.27.6,II.38.3")
    parser.add_argument("--budget", type=float, default=60.0, help="kanlab.discover's budget (s)")
    parser.add_argument("--pykan-limit", type=float, default=600.0, help="seconds before pykan is stopped")
    args = parser.parse_args()
    rows = {row["equation"]: row for row in table()}
    print("| equation | truth | kanlab.discover | recovered | s | pykan 0.2.8 workflow | recovered | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.names.split(","):
        row = rows[name]
        expr, symbols, target = equation(row)
        ranges = json.loads(row["ranges"])
        data = kanlab.create_dataset(target, n_var=len(symbols), ranges=ranges, train_num=1000, test_num=1000,
                                     seed=0, dtype=torch.float64)
        names = [s.name for s in symbols]
        found = kanlab.discover(data["train_input"].numpy(), data["train_label"].numpy(), names, budget=args.budget,
                                progress=False)
        ours = relative_error(str(found.formula), names, data["test_input"], data["test_label"])
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "data.pt"
            torch.save({key: value for key, value in data.items() if key.endswith(("input", "label"))}, path)
            try:
                done = subprocess.run([args.pykan_python, str(Path(__file__).with_name("pykan_feynman.py")),
                                       json.dumps({"data": str(path)})], capture_output=True, text=True,
                                      timeout=args.pykan_limit)
                reply = json.loads(done.stdout.strip().splitlines()[-1])
                pykan_names = [f"x_{i + 1}" for i in range(len(names))]
                theirs = relative_error(reply["formula"], pykan_names, data["test_input"], data["test_label"])
                pykan_cells = (f"`{sympy.sympify(reply['formula']).evalf(4)}`", theirs, reply["seconds"])
            except subprocess.TimeoutExpired:
                pykan_cells = (f"stopped after {args.pykan_limit:.0f} s", math.inf, args.pykan_limit)
            except (json.JSONDecodeError, IndexError, KeyError, sympy.SympifyError):
                pykan_cells = ("failed", math.inf, float("nan"))
        verdict = lambda r: "yes" if r < 1e-6 else f"no ({r:.1e})"  # noqa: E731
        print(f"| {name} | {row['dimensionless_formula']} | `{found.formula}` | {verdict(ours)} | {found.seconds:.1f} "
              f"| {pykan_cells[0]} | {verdict(pykan_cells[1])} | {pykan_cells[2]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
