"""The paper's experiments: each data generator against its definition, and every
`kanlab reproduce NAME --quick` writing its table, CSV and plot."""

import math

import numpy as np
import pytest
import torch

from kanlab.cli import main
from kanlab.experiments import NAMES
from kanlab.experiments import _continual as continual
from kanlab.experiments import _feynman as feynman
from kanlab.experiments import _poisson as poisson
from kanlab.experiments import _special as special
from kanlab.experiments import _symbolic as symbolic
from kanlab.experiments import common


def test_poisson_source_is_the_laplacian_and_the_boundary_is_zero():
    x = torch.rand(50, 2, dtype=torch.float64) * 1.8 - 0.9
    h = 1e-4
    laplacian = sum(
        (poisson.exact(x + h * e) - 2 * poisson.exact(x) + poisson.exact(x - h * e)) / h**2
        for e in torch.eye(2, dtype=torch.float64)
    )
    torch.testing.assert_close(laplacian, poisson.source(x), rtol=1e-5, atol=1e-5)
    _, boundary = poisson.points(10, 80)
    assert boundary.shape == (80, 2) and (boundary.abs().max(1).values == 1).all()
    assert poisson.exact(boundary).abs().max() < 1e-12
    eps = 1e-6
    grads = torch.stack([(poisson.exact(x + eps * e) - poisson.exact(x - eps * e)) / (2 * eps) for e in torch.eye(2, dtype=torch.float64)], 1)
    torch.testing.assert_close(poisson.exact_gradient(x), grads, rtol=1e-6, atol=1e-6)


def test_special_functions_against_closed_forms():
    pytest.importorskip("scipy")
    u = np.linspace(0.1, 0.9, 7)
    f = {row["name"]: special.scipy_function(row["name"]) for row in special.table()}
    assert len(f) == 15
    np.testing.assert_allclose(f["ellipj"](u, 0.0), np.sin(u))  # sn(u | 0) = sin u
    np.testing.assert_allclose(f["ellipkinc"](u, 0.0), u)
    np.testing.assert_allclose(f["ellipeinc"](u, 0.0), u)
    np.testing.assert_allclose(f["jv"](0.5, u), np.sqrt(2 / (np.pi * u)) * np.sin(u))
    np.testing.assert_allclose(f["yv"](0.5, u), -np.sqrt(2 / (np.pi * u)) * np.cos(u))
    np.testing.assert_allclose(f["kv"](0.5, u), np.sqrt(np.pi / (2 * u)) * np.exp(-u))
    np.testing.assert_allclose(f["iv"](0.5, u), np.sqrt(2 / (np.pi * u)) * np.sinh(u))
    np.testing.assert_allclose(f["lpmv_m_0"](1.0, u), u)  # P_1 = x
    np.testing.assert_allclose(f["lpmv_m_0"](2.0, u), (3 * u**2 - 1) / 2)
    np.testing.assert_allclose(f["sph_harm_m_0_n_1"](0.3, u), np.sqrt(3 / (4 * np.pi)) * np.cos(u))
    np.testing.assert_allclose(f["sph_harm_m_1_n_1"](0.3, u), -np.sqrt(3 / (8 * np.pi)) * np.sin(u) * np.cos(0.3))


def test_feynman_table_parses_and_is_finite_on_its_ranges():
    import json

    rows = feynman.table()
    assert len(rows) == 27
    for row in rows:
        expr, symbols, target = feynman.equation(row)
        ranges = json.loads(row["ranges"])
        g = torch.Generator().manual_seed(0)
        x = torch.stack([lo + (hi - lo) * torch.rand(50, generator=g, dtype=torch.float64) for lo, hi in ranges], 1)
        assert torch.isfinite(target(x)).all(), row["equation"]
    expr, symbols, target = feynman.equation(next(r for r in rows if r["equation"] == "I.6.2"))
    value = target(torch.tensor([[0.0, 1.0]], dtype=torch.float64)).item()
    assert value == pytest.approx(1 / math.sqrt(2 * math.pi))


def test_continual_peaks():
    x = torch.tensor(continual.CENTRES, dtype=torch.float64)
    torch.testing.assert_close(continual.target(x), torch.ones(5, dtype=torch.float64), atol=1e-10, rtol=0)
    xs, ys = continual.phase_data(2)
    assert xs.min() == pytest.approx(-0.2) and xs.max() == pytest.approx(0.2) and xs.shape == (100, 1)


@pytest.mark.parametrize("name", NAMES)
def test_reproduce_quick_writes_table_csv_and_plot(name, tmp_path, capsys):
    assert main(["reproduce", name, "--quick", "--out", str(tmp_path)]) == 0
    for suffix in ("md", "csv", "png"):
        assert (tmp_path / f"{name}.{suffix}").stat().st_size > 0
    printed = capsys.readouterr().out
    assert printed.startswith("## ") and "|---|" in printed
    if name == "symbolic":  # x*y through a multiplication node, proven equal by sympy
        assert "| exact |" in printed
    assert main(["reproduce", name, "--quick", "--out", str(tmp_path)]) == 2  # no silent overwrite


def test_quick_continual_does_not_forget():
    from kanlab import experiments

    result = experiments.continual(quick=True)
    kan_rows = [row for row in result.rows if row[1].startswith("KAN")]
    assert all(value < 1e-2 for row in kan_rows for value in row[2:] if not math.isnan(value))  # no forgetting


def test_symbolic_j0_has_the_derivative_minus_j1():
    from kanlab.experiments._symbolic import _BesselJ0

    scipy_special = pytest.importorskip("scipy.special")
    z = torch.linspace(-3.0, 7.0, 11, dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(_BesselJ0.apply(z).sum(), z)
    h = 1e-5  # torch's J0 is good to about 1e-8 only, so scipy's is differenced
    numeric = (scipy_special.j0(z.detach().numpy() + h) - scipy_special.j0(z.detach().numpy() - h)) / (2 * h)
    np.testing.assert_allclose(gradient.numpy(), numeric, atol=1e-7)
    library = symbolic._library_with_j0()
    assert library["J0"].torch(z).requires_grad  # so snapped J0 edges train their (a, b, c, d)


def test_a_torch_fn_without_gradient_is_reported(caplog):
    from kanlab.functions import SymbolicFunction

    with caplog.at_level("WARNING", logger="kanlab.functions"):
        SymbolicFunction("J0_plain", "besselj(0, x)", 3, torch_fn=torch.special.bessel_j0)
    assert "has no gradient" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="kanlab.functions"):
        SymbolicFunction("sin_again", "sin(x)", 2, torch_fn=torch.sin)
    assert caplog.text == ""


def test_symbolic_auxiliary_variables_are_appended_and_substituted_back():
    import sympy

    toy = next(value for key, value in symbolic.toys().items() if key.startswith("relativistic mass"))
    f, truth, n_var, ranges, width, _, options = toy
    features, substitutions = options["auxiliary"]
    data = symbolic._dataset(f, n_var, ranges, 50, 10, 0, features)
    x = data["train_input"]
    assert x.shape == (50, width[0]) == (50, 5)
    torch.testing.assert_close(x[:, 3], x[:, 1] / x[:, 2])
    torch.testing.assert_close(x[:, 4], 1 / torch.sqrt(1 - x[:, 3] ** 2))
    torch.testing.assert_close(data["train_label"][:, 0], x[:, 0] * x[:, 4])  # m = m0 * gamma
    s = sympy.symbols("x_1:6")
    assert common.proven_equal(s[0] * s[4], truth, substitutions(s))
    assert not common.proven_equal(s[0] * s[3], truth, substitutions(s))
    assert not common.proven_equal(s[0] * s[4], truth)  # without the substitution sympy cannot see it


def test_formula_verdict_tells_exact_numeric_and_wrong_formulas_apart():
    import sympy

    x1, x2 = sympy.symbols("x_1 x_2")
    truth = sympy.exp(sympy.sin(2 * x1) + x2**2)
    x = torch.rand(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    y = torch.exp(torch.sin(2 * x[:, :1]) + x[:, 1:] ** 2)
    # the formula's symbols may be other objects of the same names (as symbolic_formula returns)
    found = sympy.exp(sympy.Symbol("x_2") ** 2 + sympy.sin(2.0000000001 * sympy.Symbol("x_1")))
    assert common.formula_verdict(found, [x1, x2], x, y, truth, digits=4) == "exact"
    close = sympy.exp(x2**2 + sympy.sin(2.00001 * x1))  # right to 1e-5, not provably equal
    assert common.formula_verdict(close, [x1, x2], x, y, truth, digits=6).startswith("numeric (")
    assert common.formula_verdict(sympy.exp(x2), [x1, x2], x, y, truth, digits=4).startswith("no (relative RMSE")
    assert common.formula_verdict(sympy.Float(1.0), [x1, x2], x, y, truth, digits=4).startswith("no (")
    assert common.formula_verdict(sympy.log(x1), [x1, x2], x, y, truth, digits=4).startswith("no (")  # NaN, quietly


def test_minimize_reaches_the_least_squares_solution_with_lbfgs_and_adam():
    from kanlab.experiments.common import minimize

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    b = torch.randn(30, generator=generator, dtype=torch.float64)
    expected = np.linalg.lstsq(a.numpy(), b.numpy(), rcond=None)[0]
    for opt, steps, lr, atol in (("LBFGS", 5, 1.0, 1e-10), ("Adam", 3000, 0.02, 1e-6)):
        w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        steps_seen = []
        minimize([w], lambda: ((a @ w - b) ** 2).mean(), steps, opt=opt, lr=lr, normalise=opt == "LBFGS",
                 tolerance=1e-32, after_step=steps_seen.append)
        np.testing.assert_allclose(w.detach().numpy(), expected, atol=atol)
        assert steps_seen == list(range(steps))
    with pytest.raises(ValueError, match="opt must be"):
        minimize([w], lambda: w.sum(), 1, opt="SGD")


def test_fit_best_of_seeds_keeps_the_lowest_training_rmse():
    from kanlab import KAN
    from kanlab.datasets import create_dataset
    from kanlab.experiments.common import fit_best_of_seeds

    data = create_dataset(lambda x: torch.exp(torch.sin(math.pi * x[:, [0]]) + x[:, [1]] ** 2), n_var=2,
                          train_num=100, test_num=50, seed=0, dtype=torch.float64)
    options = dict(steps=3, progress=False)
    losses = [KAN([2, 1, 1], grid=3, seed=s, dtype=torch.float64).fit(data, **options)["train_loss"][-1]
              for s in (0, 1, 2)]
    model, history, seed = fit_best_of_seeds([2, 1, 1], data, (0, 1, 2), options, grid=3, dtype=torch.float64)
    assert seed == int(np.argmin(losses)) and history["train_loss"][-1] == min(losses)
    assert model.width[0][0] == 2
