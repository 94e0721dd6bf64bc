"""kanlab.discover: data in physical units in, a formula in the variables' names out."""

import json

import numpy as np
import pytest
import sympy

import kanlab
from kanlab.cli import main


def _same(found, truth, names, X):
    symbols = sympy.symbols(names)
    lhs = np.broadcast_to(sympy.lambdify(symbols, found, "numpy")(*X.T), X.shape[0])
    rhs = np.broadcast_to(sympy.lambdify(symbols, truth, "numpy")(*X.T), X.shape[0])
    return np.allclose(lhs, rhs, rtol=1e-8, atol=1e-10)


def test_discovers_a_product_in_physical_units():
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 5, size=(400, 2))
    y = X[:, 0] * np.sin(X[:, 1])
    result = kanlab.discover(X, y, ["m", "theta"], budget=10, seed=0)
    m, theta = sympy.symbols("m theta")
    assert result.formula.free_symbols == {m, theta}
    assert sympy.simplify(result.formula - m * sympy.sin(theta)) == 0, result.formula
    assert result.exact and result.seconds < 10
    assert result.front and result.front[0].complexity <= result.front[-1].complexity
    assert all(a.rmse > b.rmse for a, b in zip(result.front, result.front[1:]))  # a Pareto front
    assert "(chosen)" in result.table()
    assert result.model is not None  # a KAN computing the formula (from_formula)
    import torch

    with torch.no_grad():
        predicted = result.model(torch.as_tensor(X))[:, 0].numpy()
    np.testing.assert_allclose(predicted, y, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("names, f, ranges, truth", [
    # a sum in physical units; a ratio of sums; a one-variable composite; a composite of a sum
    ("m v", lambda m, v: 0.5 * m * v**2 + 9.81 * m, [(1, 5), (0, 3)], "m*v**2/2 + 9.81*m"),
    ("a b", lambda a, b: (1 + a * b) / (1 + a), [(0.5, 2), (-1, 1)], "(1 + a*b)/(1 + a)"),
    ("x", lambda x: np.sqrt(1 + np.sin(x) ** 2), [(-3, 3)], "sqrt(1 + sin(x)**2)"),
    ("x y", lambda x, y: np.exp(np.sin(np.pi * x) + y**2), [(-1, 1), (-1, 1)], "exp(sin(pi*x) + y**2)"),
])
def test_recovers_formulas(names, f, ranges, truth):
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.uniform(lo, hi, 500) for lo, hi in ranges])
    result = kanlab.discover(X, f(*X.T), names.split(), budget=20, seed=0)
    assert result.exact, result.table()
    assert _same(result.formula, sympy.sympify(truth), names.split(), X), result.formula


def test_a_pair_that_enters_as_a_difference_is_replaced_by_it():
    rng = np.random.default_rng(2)
    X = np.column_stack([rng.uniform(0, 1, 600), rng.uniform(0, 6.28, 600), rng.uniform(0, 6.28, 600)])
    u = X[:, 1] - X[:, 2]
    y = X[:, 0] * np.sin(u / 2) ** 2 / (u / 2) ** 2
    result = kanlab.discover(X, y, ["a", "b", "c"], budget=120, seed=0)  # stops at the exact fit (~30 s)
    assert ["b", "c", "difference"] in result.structure["pairs"]
    assert result.exact and "u = b - c" in next(c.how for c in result.front if c.formula == result.formula)


def test_noisy_data_gets_the_simple_formula_not_an_overfit():
    rng = np.random.default_rng(3)
    X = rng.uniform(-2, 2, size=(400, 2))
    y = 2.0 * X[:, 0] + np.cos(X[:, 1]) + 1e-3 * rng.normal(size=400)
    result = kanlab.discover(X, y, budget=15, seed=0)
    x1, x2 = sympy.symbols("x_1 x_2")
    assert not result.exact
    assert result.formula.free_symbols == {x1, x2} and sympy.count_ops(result.formula) <= 6, result.formula
    assert abs(float(result.formula.diff(x1).subs({x1: 0, x2: 0})) - 2.0) < 1e-2


def test_no_formula_is_nan_on_the_data():
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 1, size=(300, 1))
    y = np.log(X[:, 0] + 1.5)
    result = kanlab.discover(X, y, ["x"], budget=10, seed=0)
    for candidate in result.front:
        values = np.broadcast_to(sympy.lambdify(sympy.Symbol("x"), candidate.formula, "numpy")(X[:, 0]), 300)
        assert np.isfinite(values).all(), candidate


def test_bad_input_says_what_is_wrong():
    X = np.random.default_rng(1).uniform(size=(50, 2))
    with pytest.raises(ValueError, match=r"y must be \(n,\)"):
        kanlab.discover(X, np.zeros(49))
    with pytest.raises(ValueError, match="variables must be 2 distinct names"):
        kanlab.discover(X, X[:, 0], ["a"])
    with pytest.raises(ValueError, match="finite"):
        kanlab.discover(np.where(X > 0.5, np.nan, X), X[:, 0])
    with pytest.raises(ValueError, match="budget"):
        kanlab.discover(X, X[:, 0], budget=0)


def test_command_line_prints_the_front_and_writes_a_report(tmp_path, capsys):
    rng = np.random.default_rng(5)
    m, v = rng.uniform(1, 5, 300), rng.uniform(1, 3, 300)
    path = tmp_path / "energy.csv"
    path.write_text("m,v,E\n" + "\n".join(f"{float(a)!r},{float(b)!r},{float(0.5 * a * b * b)!r}" for a, b in zip(m, v)))
    assert main(["discover", str(path), "--target", "E", "--budget", "20", "--report", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| complexity | validation RMSE | formula | found by |" in out and "E = m*v**2/2" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["formula"] == "m*v**2/2" and report["exact"] and report["target"] == "E"
    assert sum(row["chosen"] for row in report["front"]) == 1
    assert main(["discover", str(path), "--target", "E", "--report", str(tmp_path / "r.json")]) == 2  # no overwrite


def test_regressor_discovers_with_the_frame_column_names():
    import pandas as pd

    rng = np.random.default_rng(6)
    frame = pd.DataFrame({"R": rng.uniform(1, 10, 300), "I": rng.uniform(0.1, 2, 300)})
    y = frame["R"] * frame["I"] ** 2
    from kanlab.sklearn import KANRegressor

    regressor = KANRegressor(random_state=0)
    found = regressor.discover(frame, y, budget=10)
    assert found is regressor.discovery_ and found.exact
    assert sympy.simplify(found.formula - sympy.Symbol("R") * sympy.Symbol("I") ** 2) == 0
    with pytest.raises(ValueError, match="one target"):
        regressor.discover(frame, np.column_stack([y, y]), budget=1)
