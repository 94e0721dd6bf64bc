"""The paper's workflows end to end: train -> prune -> (refine) -> auto_symbolic -> formula.

These train small networks in float64 (a few seconds each); each asserts the formula found.
"""

import sympy
import torch

import kanlab
from kanlab.demo import run_demo


def _discover(f, width, ranges, lib, *, seed=0, lamb=1e-3, weight_simple=0.8, steps=50):
    data = kanlab.create_dataset(f, n_var=2, ranges=ranges, train_num=1000, test_num=1000, seed=0, dtype=torch.float64)
    model = kanlab.KAN(width, grid=5, k=3, seed=seed, dtype=torch.float64)
    model.fit(data, steps=steps, lamb=lamb)
    model = model.prune().refine(10)
    model.fit(data, steps=steps)
    model.auto_symbolic(lib=lib, weight_simple=weight_simple)
    history = model.fit(data, steps=steps)
    x1, x2 = sympy.symbols("x_1 x_2", real=True)
    return model, model.symbolic_formula(round_digits=3)[0], history["test_loss"][-1], (x1, x2)


def test_product_by_a_multiplication_node():
    model, formula, rmse, (x1, x2) = _discover(lambda x: x[:, 0] * x[:, 1], [2, [0, 1], 1], (-1, 1), ["x", "x^2"], seed=1)
    assert formula == x1 * x2 and rmse < 1e-8
    assert model.width == [[2, 0], [0, 1], [1, 0]]


def test_division_on_positive_inputs():
    _, formula, rmse, (x1, x2) = _discover(
        lambda x: x[:, 0] / x[:, 1], [2, 5, 1], (0.5, 2), ["x", "x^2", "log", "exp", "1/x"]
    )
    assert sympy.simplify(formula - x1 / x2) == 0 and rmse < 1e-8


def test_relativistic_velocity_addition_via_arctanh_and_tanh():
    model, formula, rmse, (x1, x2) = _discover(
        lambda x: (x[:, 0] + x[:, 1]) / (1 + x[:, 0] * x[:, 1]),
        [2, 5, 1],
        (-0.9, 0.9),
        ["x", "x^2", "arctanh", "tanh"],
        weight_simple=0.5,
    )
    assert formula == sympy.tanh(sympy.atanh(x1) + sympy.atanh(x2)) and rmse < 1e-6
    assert model.width_in == [2, 1, 1]


def test_feature_attribution_ranks_inputs_and_prune_input_drops_the_dead_one():
    f = lambda x: x[:, 0] ** 2 + 0.3 * x[:, 1] + 0.1 * x[:, 2] ** 3 + 0 * x[:, 3]  # noqa: E731
    data = kanlab.create_dataset(f, n_var=4, train_num=1000, test_num=1000, seed=0, dtype=torch.float64)
    model = kanlab.KAN([4, 5, 1], seed=0, dtype=torch.float64)
    model.fit(data, steps=50, lamb=1e-3)
    score = model.feature_score()
    assert score.argsort(descending=True).tolist() == [0, 1, 2, 3]
    pruned = model.prune_input()
    assert pruned.input_index.tolist() == [0, 1, 2]
    assert pruned(data["test_input"]).shape == (1000, 1)


def test_demo_finds_the_formula_exactly_and_is_bit_identical(tmp_path):
    lines = []
    result = run_demo(out_dir=tmp_path, out=lines.append)
    assert str(result.rounded) == "exp(x_2**2 + sin(pi*x_1))"  # the constant is pi to working precision
    assert result.test_rmse < 1e-8
    assert [s[1] for s in result.stages][1] == [2, 1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kan.png", "model.kan"]
    assert any("formula" in line for line in lines)
    loaded = kanlab.KAN.load(tmp_path / "model.kan")
    x = torch.rand(10, 2, dtype=torch.float64)
    torch.testing.assert_close(loaded(x), result.model(x), rtol=0, atol=0)
    # the same seed gives the same run, bit for bit (a shorter run keeps the test quick)
    first = run_demo(steps=8, out_dir=None, out=lambda _: None)
    second = run_demo(steps=8, out_dir=None, out=lambda _: None)
    assert first.stages and [s[:4] for s in first.stages] == [s[:4] for s in second.stages]
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
