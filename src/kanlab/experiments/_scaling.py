"""Paper Fig 3.1: neural scaling laws, test RMSE against parameter count, KANs vs MLPs.

Five toy functions with the paper's KAN shapes, each refined through the grids with LBFGS
after every extension; MLPs of several depths and widths get the same optimizer and the
same total number of steps. The fitted exponent alpha (test RMSE ~ N^-alpha) uses the KAN
points up to the lowest test RMSE (past it the interpolation threshold takes over); the
paper's claim is alpha near 4 for cubic splines.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..datasets import create_dataset
from .common import Result, Timer, fit_best_of_seeds, kan_parameters, mlp_parameters, train_mlp


def _bessel(x):
    return torch.special.bessel_j0(20 * x[:, [0]])


def _exp_sin(x):
    return torch.exp(torch.sin(math.pi * x[:, [0]]) + x[:, [1]] ** 2)


def _product(x):
    return x[:, [0]] * x[:, [1]]


def _exp_mean_sin(x):
    return torch.exp(torch.mean(torch.sin(math.pi * x / 2) ** 2, dim=1, keepdim=True))


def _four(x):
    return torch.exp((torch.sin(math.pi * (x[:, [0]] ** 2 + x[:, [1]] ** 2))
                      + torch.sin(math.pi * (x[:, [2]] ** 2 + x[:, [3]] ** 2))) / 2)


FUNCTIONS = {  # name: (function, n_var, KAN shape)
    "J0(20x)": (_bessel, 1, [1, 1]),
    "exp(sin(pi x) + y^2)": (_exp_sin, 2, [2, 1, 1]),
    "x*y": (_product, 2, [2, 2, 1]),
    "exp(mean sin^2(pi x_i / 2)), 100 inputs": (_exp_mean_sin, 100, [100, 1, 1]),
    "exp((sin(pi(x1^2+x2^2)) + sin(pi(x3^2+x4^2))) / 2)": (_four, 4, [4, 4, 2, 1]),
}
FULL = dict(functions=tuple(FUNCTIONS), grids=(3, 5, 10, 20, 50, 100, 200), steps=50, train_num=1000,
            mlp_depths=(2, 3), mlp_widths=(5, 20, 100), seeds=lambda seed: (seed, seed + 1, seed + 2))
PAPER_STEPS = 200  # LBFGS steps per grid in the paper; FULL uses fewer to finish in about 25 min on 2 cores
QUICK = dict(functions=("J0(20x)", "x*y"), grids=(3, 5, 10), steps=10, train_num=200, mlp_depths=(2,), mlp_widths=(5,),
             seeds=lambda seed: (seed,))


def scaling_exponent(parameters, rmse) -> float:
    """alpha in RMSE ~ N^-alpha, least squares in log-log up to the lowest RMSE."""
    stop = int(np.argmin(rmse)) + 1
    if stop < 2:
        return float("nan")
    slope = np.polyfit(np.log(parameters[:stop]), np.log(rmse[:stop]), 1)[0]
    return float(-slope)


def run(quick: bool = False, seed: int = 0) -> Result:
    setting = QUICK if quick else FULL
    result = Result("scaling", "Neural scaling (paper Fig 3.1): test RMSE against parameters",
                    ["function", "model", "parameters", "test RMSE"])
    curves, seeds_kept = {}, {}
    with Timer() as total:
        for name in setting["functions"]:
            function, n_var, shape = FUNCTIONS[name]
            data = create_dataset(function, n_var=n_var, train_num=setting["train_num"], test_num=1000, seed=seed,
                                  dtype=torch.float64)
            kan_points, model = [], None
            fit_options = dict(opt="LBFGS", steps=setting["steps"], log=setting["steps"], progress=False)
            for grid in setting["grids"]:
                if model is None:
                    model, history, kept = fit_best_of_seeds(shape, data, setting["seeds"](seed), fit_options,
                                                             grid=grid, dtype=torch.float64)
                    seeds_kept[name] = kept
                else:
                    model = model.refine(grid)
                    history = model.fit(data, **fit_options)
                kan_points.append((kan_parameters(model), history["test_loss"][-1]))
                result.rows.append([name, f"KAN {shape}, G={grid}", *kan_points[-1]])
            mlp_points = []
            budget = setting["steps"] * len(setting["grids"])
            for depth in setting["mlp_depths"]:
                for width in setting["mlp_widths"]:
                    sizes = [n_var, *([width] * (depth - 1)), 1]
                    _, score = train_mlp(sizes, data, steps=budget, seed=seed)
                    mlp_points.append((mlp_parameters(sizes), score))
                    result.rows.append([name, f"MLP {sizes}", mlp_points[-1][0], score])
            alpha = scaling_exponent(np.array([p for p, _ in kan_points]), np.array([r for _, r in kan_points]))
            result.notes.append(f"{name}: KAN scaling exponent alpha = {alpha:.2f} (paper: about 4)")
            curves[name] = (kan_points, mlp_points)
    result.seconds = total.seconds
    result.notes.append("the first grid is trained from seeds " + ", ".join(map(str, setting["seeds"](seed)))
                        + " and the lowest training RMSE goes on (kept: "
                        + ", ".join(f"{n.split(',')[0]}: {s}" for n, s in seeds_kept.items()) + ")")
    result.notes.append(f"KAN: LBFGS {setting['steps']} steps per grid (paper: {PAPER_STEPS}); MLPs (silu) of depths "
                        f"{setting['mlp_depths']} and widths {setting['mlp_widths']}: LBFGS for the same total steps")

    def draw(figure):
        for index, (name, (kan_points, mlp_points)) in enumerate(curves.items()):
            ax = figure.add_subplot(1, len(curves), index + 1)
            ax.loglog(*zip(*kan_points), "o-", label="KAN")
            ax.loglog(*zip(*sorted(mlp_points)), "s", label="MLP")
            ax.set_title(name[:28], fontsize=7)
            ax.set_xlabel("parameters", fontsize=7)
            if index == 0:
                ax.set_ylabel("test RMSE")
                ax.legend(fontsize=7)

    result.draw = draw
    return result
