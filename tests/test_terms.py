"""kanlab.terms: the term search of discover, against numpy least squares and known formulas."""

import time

import numpy as np
import pytest
import sympy

from kanlab import terms


def _split(n, seed=0):
    order = np.random.default_rng(seed).permutation(n)
    return order[n // 5:], order[: n // 5]


def _search(X, y, names, seconds=30):
    symbols = sympy.symbols(names)
    table = terms.term_table(X, list(symbols))
    train, val = _split(len(y))
    front = terms.search(table, y, train, val, deadline=time.perf_counter() + seconds)
    return symbols, front


def test_table_holds_each_term_once_with_its_values():
    rng = np.random.default_rng(0)
    X = rng.uniform(0.5, 2.0, size=(1000, 2))
    a, b = sympy.symbols("a b")
    table = terms.term_table(X, [a, b])
    for expr, column in zip(table.exprs, table.values.T):
        value = np.broadcast_to(sympy.lambdify((a, b), expr, "numpy")(*X.T), 1000)
        np.testing.assert_allclose(value, column, rtol=1e-12, err_msg=str(expr))
    assert sum(expr == 1 for expr in table.exprs) == 1
    assert table.exprs[0] == 1 and table.tiers == sorted(table.tiers) and table.tiers[-1] == len(table.exprs)
    # no term is a combination of earlier ones: cos(a)**2 = 1 - sin(a)**2 is dropped
    assert sympy.cos(a) ** 2 not in table.exprs or sympy.sin(a) ** 2 not in table.exprs
    rank = np.linalg.matrix_rank(table.values[:, : table.tiers[2]] / np.linalg.norm(table.values[:, : table.tiers[2]], axis=0))
    assert rank == table.tiers[2]


def test_inputs_that_reach_zero_or_change_sign_get_no_poles():
    X = np.column_stack([np.linspace(-1, 1, 101), np.linspace(0, 2, 101)])
    x, z = sympy.symbols("x z")
    table = terms.term_table(X, [x, z])
    assert np.isfinite(table.values).all()
    assert not any(e.has(sympy.log(x)) or (e.as_powers_dict().get(x, 0) < 0) for e in table.exprs)


def test_transforms_are_offered_only_where_invertible():
    names = lambda y: [t[0] for t in terms.transforms(y)]  # noqa: E731
    assert "log(y)" in names(np.array([0.5, 2.0])) and "log(y)" not in names(np.array([-0.5, 2.0]))
    assert "sin(y)" in names(np.array([-1.0, 1.0])) and "sin(y)" not in names(np.array([0.0, 3.0]))
    assert "1/y" not in names(np.array([0.0, 1.0]))
    for name, values, inverse_sym, inverse_np, _ in terms.transforms(np.array([0.2, 0.7, 1.3])):
        np.testing.assert_allclose(inverse_np(values), [0.2, 0.7, 1.3], rtol=1e-12, err_msg=name)


def test_backward_elimination_matches_exhaustive_least_squares():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(120, 10))
    A /= np.linalg.norm(A, axis=0)
    t = A[:, [2, 5, 7]] @ np.array([1.5, -2.0, 0.7]) + 1e-3 * rng.normal(size=120)
    path = terms._backward(A, t, list(range(10)), keep=9)
    assert sorted(path[-3]) == [2, 5, 7]
    # each step drops the column whose removal costs least, as numpy's lstsq measures it
    current = list(range(10))
    for support in path:
        costs = []
        for j in current:
            rest = [k for k in current if k != j]
            costs.append(np.linalg.lstsq(A[:, rest], t, rcond=None)[1].sum())
        current.pop(int(np.argmin(costs)))
        assert sorted(current) == sorted(support)


@pytest.mark.parametrize("names, f, ranges, truth", [
    ("a b", lambda a, b: (a + b) / (1 + a * b), [(-1, 1), (-1, 1)], "(a + b)/(1 + a*b)"),
    ("n theta", lambda n, t: np.arcsin(n * np.sin(t)), [(0, 0.99), (0, 6.28)], "asin(n*sin(theta))"),
    ("theta sigma", lambda t, s: np.exp(-t**2 / (2 * s**2)) / np.sqrt(2 * np.pi * s**2), [(-1, 1), (0.5, 2)],
     "exp(-theta**2/(2*sigma**2))/sqrt(2*pi*sigma**2)"),
    ("a delta", lambda a, d: 1 + a + 2 * np.sqrt(a) * np.cos(d), [(0.1, 1), (0, 6.28)], "1 + a + 2*sqrt(a)*cos(delta)"),
])
def test_finds_known_formulas_exactly(names, f, ranges, truth):
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(lo, hi, 600) for lo, hi in ranges])
    y = f(*X.T)
    symbols, front = _search(X, y, names)
    best = min(front, key=lambda found: found.rmse)
    assert best.rmse <= 1e-9 * np.std(y), best
    value = sympy.lambdify(symbols, best.formula, "numpy")(*X.T)
    np.testing.assert_allclose(value, sympy.lambdify(symbols, sympy.sympify(truth, locals=dict(zip(names.split(), symbols))), "numpy")(*X.T), rtol=1e-8)
