"""The critics' claim that KANs overfit noise: label noise 0, 1 % and 10 %, clean test targets.

exp(sin(pi x) + y^2) with Gaussian label noise of the given share of the targets' standard
deviation; 20 % of the noisy training rows are held out for validation. KAN [2, 5, 1]
(grid 5 -> 10): plain, with the paper's sparsification (lamb = 1e-3), and with early stopping
(the step with the lowest validation loss is kept). MLPs get the same optimizer, step budget
and validation rows, with a small search over depth and width (each reported); the table
gives test RMSE on noise-free targets.
"""

from __future__ import annotations

import torch

from ..datasets import create_dataset, paper_function
from ..model import KAN
from .common import BestOnValidation, Result, Timer, mlp_parameters, rmse, train_mlp

FULL = dict(levels=(0.0, 0.01, 0.1), train_num=1000, grids=(5, 10), steps=100, mlp=([2, 32, 1], [2, 64, 64, 1], [2, 128, 128, 1]))
QUICK = dict(levels=(0.0, 0.1), train_num=150, grids=(5,), steps=3, mlp=([2, 32, 1],))


def noisy_data(level: float, train_num: int, seed: int):
    function, n_var = paper_function("exp_sin")
    data = create_dataset(function, n_var=n_var, train_num=train_num, test_num=1000, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed + 1)
    y = data["train_label"]
    noisy = y + level * y.std() * torch.randn(y.shape, generator=g, dtype=y.dtype)
    n_val = train_num // 5
    return ({"train_input": data["train_input"][n_val:], "train_label": noisy[n_val:],
             "test_input": data["test_input"], "test_label": data["test_label"]},
            (data["train_input"][:n_val], noisy[:n_val]))


def _kan(data, validation, grids, steps, seed, lamb=0.0, early=False):
    model = None
    for grid in grids:
        model = KAN([2, 5, 1], grid=grid, seed=seed, dtype=torch.float64) if model is None else model.refine(grid)
        keeper = BestOnValidation(*validation) if early else None
        model.fit(data, opt="LBFGS", steps=steps, lamb=lamb, log=1, progress=False, callbacks=[keeper] if keeper else ())
        if keeper is not None:
            keeper.restore(model)
    with torch.no_grad():
        return rmse(model(data["test_input"]), data["test_label"])


def run(quick: bool = False, seed: int = 0) -> Result:
    setting = QUICK if quick else FULL
    result = Result("noise", "Label noise (the overfitting critique): test RMSE on clean targets",
                    ["noise", "model", "test RMSE (clean)"])
    scores = {}
    with Timer() as total:
        for level in setting["levels"]:
            data, validation = noisy_data(level, setting["train_num"], seed)
            grids, steps = setting["grids"], setting["steps"]
            for name, options in (("KAN [2, 5, 1]", {}), ("KAN [2, 5, 1] + sparsification", {"lamb": 1e-3}),
                                  ("KAN [2, 5, 1] + early stopping", {"early": True})):
                score = _kan(data, validation, grids, steps, seed, **options)
                result.rows.append([f"{level:.0%}", name, score])
                scores.setdefault(name, []).append(score)
            budget = steps * len(grids)
            for early in (False, True):
                trained = []
                for sizes in setting["mlp"]:
                    mlp, test = train_mlp(sizes, data, steps=budget, seed=seed, validation=validation if early else None)
                    with torch.no_grad():
                        trained.append((rmse(mlp(validation[0]), validation[1]), test, sizes))
                _, test, sizes = min(trained, key=lambda t: t[0])  # chosen on the validation rows, never the test set
                label = f"MLP (best on validation of {len(setting['mlp'])}: {sizes}, {mlp_parameters(sizes)} params)"
                label += " + early stopping" if early else ""
                result.rows.append([f"{level:.0%}", label, test])
                scores.setdefault("MLP" + (" + early stopping" if early else ""), []).append(test)
    result.seconds = total.seconds
    result.notes.append(f"LBFGS, {setting['steps']} steps per grid for the KANs, the same total for the MLPs; "
                        "the MLP search covers the listed sizes")

    def draw(figure):
        ax = figure.add_subplot(1, 1, 1)
        levels = [max(level, 1e-3) for level in setting["levels"]]
        for name, values in scores.items():
            ax.loglog(levels, values, "o-", label=name)
        ax.set_xlabel("label noise (share of std; 0 drawn at 1e-3)")
        ax.set_ylabel("test RMSE on clean targets")
        ax.legend(fontsize=7)

    result.draw = draw
    return result
