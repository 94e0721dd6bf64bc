"""kanlab.discover: data in physical units in, a formula in the variables' names out."""

import numpy as np
import pytest
import sympy

import kanlab


def test_discovers_a_product_in_physical_units():
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 5, size=(400, 2))
    y = X[:, 0] * np.sin(X[:, 1])
    result = kanlab.discover(X, y, ["m", "theta"], budget=10, seed=0)
    m, theta = sympy.symbols("m theta")
    assert result.formula.free_symbols == {m, theta}
    assert sympy.simplify(result.formula - m * sympy.sin(theta)) == 0, result.formula
    assert result.front and result.front[0].complexity <= result.front[-1].complexity
    assert all(a.rmse > b.rmse for a, b in zip(result.front, result.front[1:]))  # a Pareto front
    assert "(chosen)" in result.table() and result.seconds > 0
    assert result.structure["mul"] == [[0], [1]]  # read from the probe: a product of the two


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
