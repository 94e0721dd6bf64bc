"""Paper Fig 2.3: grid extension on exp(sin(pi x) + y^2) with KAN [2, 5, 1] and [2, 1, 1].

Each shape starts at the first grid and is refined through the rest (``model.refine``),
trained with LBFGS after every extension; train and test RMSE per grid. The interpolation
threshold is the grid at which the parameter count reaches the number of training points.
"""

from __future__ import annotations

import torch

from ..datasets import create_dataset, paper_function
from .common import Result, Timer, fit_best_of_seeds, kan_parameters

FULL = dict(widths=([2, 5, 1], [2, 1, 1]), grids=(3, 5, 10, 20, 50, 100, 200, 500, 1000), steps=100, train_num=1000,
            seeds=lambda seed: (seed, seed + 1, seed + 2))
QUICK = dict(widths=([2, 1, 1],), grids=(3, 5, 10), steps=20, train_num=200, seeds=lambda seed: (seed,))


def run(quick: bool = False, seed: int = 0) -> Result:
    setting = QUICK if quick else FULL
    function, n_var = paper_function("exp_sin")
    data = create_dataset(function, n_var=n_var, train_num=setting["train_num"], test_num=1000, seed=seed,
                          dtype=torch.float64)
    result = Result("grid_extension", "Grid extension (paper Fig 2.3): exp(sin(pi x) + y^2)",
                    ["width", "grid", "parameters", "train RMSE", "test RMSE", "seconds"])
    curves, seeds_kept = {}, []
    with Timer() as total:
        for width in setting["widths"]:
            model, points = None, []
            fit_options = dict(opt="LBFGS", steps=setting["steps"], log=setting["steps"], progress=False)
            for grid in setting["grids"]:
                with Timer() as timer:
                    if model is None:
                        model, history, kept = fit_best_of_seeds(width, data, setting["seeds"](seed), fit_options,
                                                                 grid=grid, dtype=torch.float64)
                        seeds_kept.append(f"{width}: {kept}")
                    else:
                        model = model.refine(grid)
                        history = model.fit(data, **fit_options)
                train, test = history["train_loss"][-1], history["test_loss"][-1]
                result.rows.append([str(width), grid, kan_parameters(model), train, test, round(timer.seconds, 2)])
                points.append((grid, train, test))
            curves[str(width)] = points
            edges = sum(a * b for a, b in zip(width[:-1], width[1:]))
            threshold = setting["train_num"] / edges - 5  # (G + k + 2) per edge = training points
            result.notes.append(f"{width}: interpolation threshold near G = {threshold:.0f} "
                                f"({edges} edges x (G + 5) numbers = {setting['train_num']} training points)")
    result.seconds = total.seconds
    result.notes.append("the first grid is trained from seeds " + ", ".join(map(str, setting["seeds"](seed)))
                        + ", keeping the lowest training RMSE (kept: " + "; ".join(seeds_kept) + ")")
    result.notes.append(f"LBFGS {setting['steps']} steps per grid (paper: 200; fewer to finish in minutes on 2 cores)")
    result.notes.append("paper: test RMSE falls with G until the interpolation threshold, then rises; "
                        "[2, 1, 1] reaches about 1e-4 to 1e-5 near G = 100-200 (Fig 2.3)")

    def draw(figure):
        ax = figure.add_subplot(1, 1, 1)
        for name, points in curves.items():
            grids = [p[0] for p in points]
            line, = ax.loglog(grids, [p[2] for p in points], "o-", label=f"{name} test")
            ax.loglog(grids, [p[1] for p in points], "--", color=line.get_color(), label=f"{name} train")
        ax.set_xlabel("grid size G")
        ax.set_ylabel("RMSE")
        ax.legend()
        ax.set_title("grid extension")

    result.draw = draw
    return result
