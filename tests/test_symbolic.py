"""Symbolic edges in a layer, snapping (suggest / fix / unfix / auto), formulas and export."""

import math
import pickle

import numpy as np
import pytest
import sympy
import torch

import kanlab
import kanlab.symbolic
import functools

import kanlab
from kanlab import KAN, Library, default_library

KANLinear = functools.partial(kanlab.KANLinear, grid_update=None)  # the grid where the test puts it
from kanlab.export import to_latex, to_numpy, to_torch
from kanlab.formula import round_formula


def _safe_random_symbolic(model, seed=0, names=("sin", "x^2", "exp", "tanh", "x", "x^3", "cos", "gaussian")):
    """Fix every edge of ``model`` to a random library function with random parameters."""
    generator = torch.Generator().manual_seed(seed)
    for l, layer in enumerate(model.layers):
        for j in range(layer.out_features):
            for i in range(layer.in_features):
                name = names[int(torch.randint(len(names), (1,), generator=generator))]
                a, b, c, d = (torch.rand(4, generator=generator, dtype=torch.float64) - 0.5).tolist()
                model.fix_symbolic(l, i, j, name, fit_params=False, params=(1 + a, b, c, d * 0.2))
    return model


def test_symbolic_edge_forward_gradients_and_no_cost_without_them():
    layer = KANLinear(3, 2, dtype=torch.float64)
    x = torch.rand(50, 3, dtype=torch.float64) * 2 - 1
    numeric = layer.edge_activations(x)
    sin = default_library()["sin"]
    layer.set_symbolic(1, 2, sin, (2.0, 0.5, 1.5, -0.25))
    expected = numeric.clone()
    expected[:, 1, 2] = 1.5 * torch.sin(2.0 * x[:, 2] + 0.5) - 0.25
    torch.testing.assert_close(layer.edge_activations(x), expected)
    torch.testing.assert_close(layer(x), expected.sum(-1))
    layer(x).sum().backward()
    assert layer.symbolic_affine.grad[1, 2].abs().sum() > 0
    assert layer.symbolic_affine.grad[0].abs().sum() == 0
    assert layer.coef.grad[1, 2].abs().sum() == 0  # the spline of a symbolic edge is idle
    layer.clear_symbolic(1, 2)
    torch.testing.assert_close(layer.edge_activations(x), numeric)
    assert layer._symbolic_groups == []
    torch.autograd.gradcheck(lambda t: layer(t), (x[:5].clone().requires_grad_(True),))


def test_fix_suggest_unfix_on_a_model():
    torch.manual_seed(0)
    model = KAN([2, 3, 1], seed=0, dtype=torch.float64)
    x = torch.rand(300, 2, dtype=torch.float64) * 2 - 1
    model.remember_inputs(x)
    with torch.no_grad():  # make edge (0, 0, 1) a clean sine by fitting its spline to one
        layer = model.layers[0]
        layer.scale_base[1, 0] = 0.0
        layer.scale_sp[1, 0] = 1.0
        from kanlab import splines

        target = torch.zeros(300, 3, 2, dtype=torch.float64)
        target[:, 1, 0] = torch.sin(2 * x[:, 0])
        layer.coef[1, 0] = splines.fit_coefficients(x, target, layer.grid, layer.k)[1, 0]
    suggestions = model.suggest_symbolic(0, 0, 1, lib=["x", "x^2", "sin", "tanh"], topk=3)
    assert len(suggestions) == 3 and suggestions[0].name == "sin" and suggestions[0].r2 > 0.999
    before = model(x)
    chosen = model.fix_symbolic(0, 0, 1, "sin")
    assert chosen.r2 > 0.999
    torch.testing.assert_close(model(x), before, atol=1e-2, rtol=0)
    model.unfix_symbolic(0, 0, 1)
    torch.testing.assert_close(model(x), before)  # the old spline comes back
    with pytest.raises(IndexError, match="j must"):
        model.fix_symbolic(0, 0, 7, "sin")
    with pytest.raises(KeyError, match="no function"):
        model.fix_symbolic(0, 0, 1, "nope")


def test_auto_symbolic_fixes_every_active_edge_and_fit_polishes():
    model = KAN([2, 2, 1], seed=1, dtype=torch.float64)
    x = torch.rand(400, 2, dtype=torch.float64) * 2 - 1
    model.remember_inputs(x)
    model.remove_edge(0, 1, 1)
    report = model.auto_symbolic(lib=["x", "x^2", "sin", "tanh"])
    assert set(report) == {(0, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (1, 1, 0)}
    assert all(model.layers[l].symbolic_function(j, i) is not None for l, i, j in report)
    assert model.layers[0].symbolic_function(1, 1) is None  # pruned edges are left alone
    y = model(x).detach() * 1.1 + 0.05
    history = model.fit({"train_input": x, "train_label": y}, steps=5, update_grid=False)
    assert history["train_loss"][-1] < history["train_loss"][0] or history["train_loss"][0] < 1e-8
    assert model.auto_symbolic(lib=["x"]) == {}  # nothing left to snap


def test_r2_threshold_keeps_poor_fits_as_splines():
    model = KAN([1, 1], seed=0, dtype=torch.float64)
    model.remember_inputs(torch.linspace(-1, 1, 200, dtype=torch.float64).unsqueeze(1))
    report = model.auto_symbolic(lib=["0"], r2_threshold=0.5)
    assert report[(0, 0, 0)].r2 < 0.5 and model.layers[0].symbolic_function(0, 0) is None


@pytest.mark.parametrize("width", [[3, 2, 2], [3, [2, 2], 2], [2, [1, 2], [0, 1], 1]])
def test_formula_equals_model_with_sum_and_multiplication_nodes(width):
    model = _safe_random_symbolic(KAN(width, seed=0, dtype=torch.float64, mult_arity=2), seed=len(str(width)))
    formulas = model.symbolic_formula()
    variables = sympy.symbols(f"x_1:{model.n_inputs + 1}", real=True)
    x = torch.rand(200, model.n_inputs, dtype=torch.float64) * 2 - 1
    expected = model(x).detach().numpy()
    got = to_numpy(formulas, variables)(x.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(to_torch(formulas, variables)(x), model(x).detach(), rtol=1e-10, atol=1e-10)
    assert "x_{1}" in to_latex(formulas)


def test_formula_refuses_spline_edges_unless_asked_and_names_variables():
    model = KAN([2, 1], seed=0, dtype=torch.float64)
    model.fix_symbolic(0, 0, 0, "sin", fit_params=False, params=(1.0, 0.0, 2.0, 0.0))
    with pytest.raises(ValueError, match=r"still splines.*\(0, 1, 0\)"):
        model.symbolic_formula()
    (expr,) = model.symbolic_formula(var_names=["p", "q"], allow_splines=True)
    assert {str(s) for s in expr.free_symbols} == {"p", "q"}
    assert "phi_0_1_0" in str(expr) and "sin(p)" in str(expr)


def test_round_formula():
    x = sympy.Symbol("x")
    assert round_formula(1.00000003 * sympy.exp(0.99999 * x**2), 4) == sympy.exp(x**2)
    assert round_formula(0.0099 * (10.05 * x + 1e-9) ** 2 + 1e-7, 3) == x**2
    assert round_formula(sympy.Float(2.5) * x, 0) == 2 * x
    with pytest.raises(ValueError, match="round_digits"):
        round_formula(x, -1)


def test_symbolic_models_save_load_pickle_and_custom_library(tmp_path):
    model = _safe_random_symbolic(KAN([2, [1, 1], 1], seed=0, dtype=torch.float64))
    x = torch.rand(20, 2, dtype=torch.float64)
    path = tmp_path / "m.kan"
    model.save(path)
    loaded = KAN.load(path)
    torch.testing.assert_close(loaded(x), model(x))
    assert str(loaded.symbolic_formula()[0]) == str(model.symbolic_formula()[0])
    torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x), model(x))
    library = default_library()
    library.register("J0", sympy.besselj(0, sympy.Symbol("x")), 3, torch_fn=torch.special.bessel_j0)
    model.fix_symbolic(0, 0, 0, library["J0"], fit_params=False)
    model.save(path)
    with pytest.raises(ValueError, match="J0"):
        KAN.load(path)
    torch.testing.assert_close(KAN.load(path, library=library)(x), model(x))
    assert isinstance(Library(), Library)


def test_no_candidate_is_nan_on_the_data_range():
    """A spline that is 0 for x < 0 and sqrt(x) above is fit exactly by the guarded sqrt(x), but
    the formula sqrt(x) is NaN on half the data: it must not be chosen."""
    import numpy as np
    import sympy

    from kanlab import KAN
    from kanlab.functions import default_library
    from kanlab.symbolic import OUTSIDE_DOMAIN, _inside_domain

    x = torch.linspace(-1, 1, 401, dtype=torch.float64).unsqueeze(1)
    y = torch.sqrt(x.clamp(min=0))
    model = KAN([1, 1], grid=20, seed=0, dtype=torch.float64)
    model.fit((x, y), steps=30)
    suggestions = model.suggest_symbolic(0, 0, 0, lib=["sqrt", "x", "x^2"], topk=3)
    assert suggestions[-1].name == "sqrt" and suggestions[-1].reason == OUTSIDE_DOMAIN and suggestions[-1].r2 > 0.99
    model.auto_symbolic(lib=["sqrt", "x", "x^2"])
    (formula,) = model.symbolic_formula()
    values = sympy.lambdify(sympy.Symbol("x_1"), formula, "numpy")(x[:, 0].numpy())
    assert np.isfinite(values).all()
    library = default_library()
    assert _inside_domain(library["log"], 1.0, 1.5, -1.0, 1.0) and not _inside_domain(library["log"], 1.0, 0.5, -1.0, 1.0)
    assert not _inside_domain(library["1/x"], 1.0, 0.0, -1.0, 1.0) and _inside_domain(library["1/x"], 1.0, 2.0, -1.0, 1.0)
    assert not _inside_domain(library["arctanh"], 1.0, 0.0, -1.0, 1.0)
    assert not _inside_domain(library["tan"], 2.0, 0.0, -1.0, 1.0) and _inside_domain(library["tan"], 1.0, 0.0, -1.0, 1.0)


def test_a_taylor_lookalike_loses_to_the_polynomial_it_mimics():
    """c*sin(a*x + pi/2) + d with a tiny a is x^2 to 1e-10 on [-1, 1]: the polynomial wins the tie,
    while a real sine (a argument spanning radians) keeps its place."""
    from kanlab.functions import AffineFit, default_library
    from kanlab.symbolic import _suggestions, _taylor_lookalike

    library = default_library()
    lib = kanlab.symbolic.resolve_library(["x^2", "sin"])
    as_tensor = lambda *values: torch.tensor([values], dtype=torch.float64)  # noqa: E731
    fit = AffineFit(names=["x^2", "sin"], a=as_tensor(1.0, 0.01), b=as_tensor(0.0, math.pi / 2),
                    c=as_tensor(1.0, -2e4), d=as_tensor(0.0, 2e4), r2=as_tensor(1 - 1e-9, 1 - 1e-10), reason=[""])
    span = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    assert _suggestions(fit, lib, 0, 0.8, span)[0].name == "x^2"
    assert _taylor_lookalike(library["sin"], 0.01, math.pi / 2, -1, 1)
    assert not _taylor_lookalike(library["sin"], 3.0, 0.0, -1, 1) and not _taylor_lookalike(library["x^2"], 0.01, 0, -1, 1)


def test_candidates_are_judged_on_samples_they_were_not_fit_to():
    from kanlab import KAN

    x = torch.linspace(-1, 1, 300, dtype=torch.float64).unsqueeze(1)
    model = KAN([1, 1], grid=10, seed=0, dtype=torch.float64)
    model.fit((x, torch.sin(3 * x)), steps=20)
    best = model.suggest_symbolic(0, 0, 0, lib=["sin", "x", "x^3"], topk=3)[0]
    assert best.name == "sin" and 0.999 < best.r2 <= 1.0
