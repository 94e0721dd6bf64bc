"""Paper Table 1: the 15 special functions of two variables, small KANs vs MLPs.

Functions, input ranges and the paper's numbers come from ``data/special_functions.csv`` (the
paper publishes no ranges; see that folder's README). Each function is fit by KANs of the
shapes listed (grid extension through the grids, LBFGS after each), and by MLPs with the
same optimizer and total steps. Reported: the smallest KAN (fewest parameters) with test
RMSE < 1e-2, the best KAN, the best MLP, beside the paper's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from ..datasets import create_dataset
from ..model import KAN
from .common import Result, Timer, kan_parameters, mlp_parameters, train_mlp

DATA = Path(__file__).parent / "data" / "special_functions.csv"


def table() -> list[dict]:
    with open(DATA, newline="") as stream:
        return list(csv.DictReader(stream))


def scipy_function(name: str):
    """numpy f(x, y) for a row name of the table (scipy >= 1.15 names)."""
    import scipy.special as sp

    if name == "ellipj":
        return lambda x, y: sp.ellipj(x, y)[0]  # sn
    if name in ("ellipkinc", "ellipeinc", "jv", "yv", "kv", "iv"):
        return getattr(sp, name)
    if name.startswith("lpmv_m_"):
        m = int(name.rsplit("_", 1)[1])
        return lambda x, y: sp.lpmv(m, x, y)
    if name.startswith("sph_harm_m_"):
        _, _, _, m, _, n = name.split("_")
        # scipy's old sph_harm(m, n, azimuth, polar) is sph_harm_y(n, m, polar, azimuth); real part
        return lambda x, y: np.real(sp.sph_harm_y(int(n), int(m), y, x))
    raise ValueError(f"name: unknown special function {name!r}")


def torch_target(name: str):
    fn = scipy_function(name)

    def target(x: torch.Tensor) -> torch.Tensor:
        values = fn(x[:, 0].double().cpu().numpy(), x[:, 1].double().cpu().numpy())
        return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=x.dtype).unsqueeze(1)

    return target


FULL = dict(names=None, shapes=([2, 1, 1], [2, 2, 1], [2, 3, 1], [2, 5, 1], [2, 3, 2, 1]), grids=(3, 5, 10, 20),
            steps=30, train_num=1000, mlp=([2, 20, 1], [2, 50, 50, 1], [2, 100, 100, 100, 1]))
QUICK = dict(names=("jv", "sph_harm_m_0_n_1"), shapes=([2, 1, 1],), grids=(3,), steps=5, train_num=200,
             mlp=([2, 20, 1],))


def run(quick: bool = False, seed: int = 0) -> Result:
    setting = QUICK if quick else FULL
    rows = [row for row in table() if setting["names"] is None or row["name"] in setting["names"]]
    result = Result("special", "Special functions (paper Table 1): smallest KAN with RMSE < 1e-2, best KAN, best MLP",
                    ["function", "smallest KAN < 1e-2", "its RMSE", "best KAN", "best KAN RMSE", "best MLP",
                     "best MLP RMSE", "paper minimal", "paper minimal RMSE", "paper best RMSE", "paper MLP RMSE"])
    summary = {}
    with Timer() as total:
        for row in rows:
            ranges = json.loads(row["ranges"])
            data = create_dataset(torch_target(row["name"]), n_var=2, ranges=ranges, train_num=setting["train_num"],
                                  test_num=1000, seed=seed, dtype=torch.float64)
            kans = []
            for shape in setting["shapes"]:
                model = None
                for grid in setting["grids"]:
                    model = KAN(shape, grid=grid, seed=seed, dtype=torch.float64) if model is None else model.refine(grid)
                    history = model.fit(data, opt="LBFGS", steps=setting["steps"], log=setting["steps"], progress=False)
                kans.append((kan_parameters(model), history["test_loss"][-1], shape))
            budget = setting["steps"] * len(setting["grids"])
            mlps = [(mlp_parameters(s), train_mlp(s, data, steps=budget, seed=seed)[1], s) for s in setting["mlp"]]
            good = sorted(k for k in kans if k[1] < 1e-2)
            best_kan, best_mlp = min(kans, key=lambda k: k[1]), min(mlps, key=lambda m: m[1])
            result.rows.append([
                row["name"], str(good[0][2]) if good else "none", good[0][1] if good else float("nan"),
                str(best_kan[2]), best_kan[1], str(best_mlp[2]), best_mlp[1],
                row["paper_minimal_shape"], float(row["paper_minimal_rmse"]), float(row["paper_best_rmse"]),
                float(row["paper_mlp_rmse"]),
            ])
            summary[row["name"]] = (best_kan[1], best_mlp[1])
    result.seconds = total.seconds
    result.notes.append(f"KAN shapes {list(map(str, setting['shapes']))}, grids {setting['grids']}, "
                        f"{setting['steps']} LBFGS steps per grid; MLPs (silu) {list(map(str, setting['mlp']))} "
                        "with the same total steps; ranges from data/special_functions.csv (ours: the paper has none)")

    def draw(figure):
        ax = figure.add_subplot(1, 1, 1)
        names = list(summary)
        positions = np.arange(len(names))
        ax.bar(positions - 0.2, [summary[n][0] for n in names], 0.4, label="best KAN")
        ax.bar(positions + 0.2, [summary[n][1] for n in names], 0.4, label="best MLP")
        ax.set_yscale("log")
        ax.set_xticks(positions, names, rotation=60, fontsize=7)
        ax.set_ylabel("test RMSE")
        ax.legend()

    result.draw = draw
    return result
