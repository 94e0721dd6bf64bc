"""kanlab.backtrack: a snapped edge that composes badly is re-snapped to the right function."""

import pytest
import torch

from kanlab import KAN
from kanlab.backtrack import backtrack
from kanlab.datasets import create_dataset


def test_a_wrong_snap_is_replaced_by_the_true_function():
    data = create_dataset(lambda x: (x[:, 0] ** 2 + torch.sin(torch.pi * x[:, 1]))[:, None], n_var=2, train_num=400,
                          test_num=10, seed=0, dtype=torch.float64)
    model = KAN([2, 1], grid=10, seed=0, dtype=torch.float64)
    model.fit(data, steps=60, progress=False)
    with torch.no_grad():
        reference = float(torch.sqrt(torch.mean((model(data["train_input"]) - data["train_label"]) ** 2)))
    model.fix_symbolic(0, 1, 0, "sin")
    model.fix_symbolic(0, 0, 0, "exp")  # wrong: the edge is x**2
    model.fit(data, steps=20, update_grid=False, progress=False)
    with torch.no_grad():
        before = float(torch.sqrt(torch.mean((model(data["train_input"]) - data["train_label"]) ** 2)))
    fixed, log = backtrack(model, data, reference=max(reference, 1e-6), factor=10.0)
    with torch.no_grad():
        after = float(torch.sqrt(torch.mean((fixed(data["train_input"]) - data["train_label"]) ** 2)))
    assert before > 1e-3 and after < 1e-6 and after < before / 100
    assert len(log) == 1 and log[0].startswith("edge (0,0,0): exp -> x^2"), log
    assert fixed.layers[0].symbolic_function(0, 1).name == "sin"
    assert model.layers[0].symbolic_function(0, 0).name == "exp"  # the input model is left as it was


def test_good_snaps_are_left_alone_and_bad_reference_is_refused():
    data = create_dataset(lambda x: (x[:, 0] ** 2)[:, None], n_var=1, train_num=100, test_num=10, seed=0,
                          dtype=torch.float64)
    model = KAN([1, 1], seed=0, dtype=torch.float64)
    model.fix_symbolic(0, 0, 0, "x^2", x=data["train_input"])
    fixed, log = backtrack(model, data, reference=1e-3)
    assert fixed is model and log == []
    with pytest.raises(ValueError, match="reference"):
        backtrack(model, data, reference=float("nan"))
