"""The symbolic library and the fit of c * f(a * x + b) + d (kanlab.functions)."""

import math
import pickle

import numpy as np
import pytest
import sympy
import torch

from kanlab.functions import HELLOKAN_LIBRARY, Library, SymbolicFunction, _step_breakpoints, default_library, fit_affine
from kanlab.symbolic import symbolic_score

REQUIRED = [
    "x", "x^2", "x^3", "x^4", "x^5", "1/x", "1/x^2", "1/x^3", "sqrt", "1/sqrt", "x^1.5", "exp", "log", "abs",
    "sin", "cos", "tan", "tanh", "sgn", "arcsin", "arccos", "arctan", "arctanh", "gaussian", "0",
]  # fmt: skip

# Where two entries are the same family of curves up to the affine maps, either is a correct answer.
EQUIVALENT = {
    "sin": {"sin", "cos"},
    "cos": {"sin", "cos"},
    "arcsin": {"arcsin", "arccos"},
    "arccos": {"arcsin", "arccos"},
    "x^0.5": {"sqrt", "x^0.5"},
    "sqrt": {"sqrt", "x^0.5"},
}

# Inputs z = a * x + b inside each function's domain (what its data would look like).
SAFE_RANGE = {
    "1/x": (0.2, 2.0), "1/x^2": (0.2, 2.0), "1/x^3": (0.3, 2.0), "sqrt": (0.05, 2.0), "x^0.5": (0.05, 2.0),
    "1/sqrt": (0.02, 2.0), "log": (0.1, 3.0), "arcsin": (-0.999, 0.999),
    "arccos": (-0.999, 0.999), "arctanh": (-0.999, 0.999), "arctan": (-6.0, 6.0), "x^1.5": (0.0, 4.0), "tan": (-1.3, 1.3), "sgn": (-1.0, 1.0),
    "abs": (-1.0, 1.5), "x^4": (-1.0, 1.5), "x^2": (-1.0, 1.5), "gaussian": (-2.0, 1.5),
}  # fmt: skip


def test_library_has_the_required_entries_with_one_source():
    library = default_library()
    assert set(REQUIRED) <= set(library.names)
    x = sympy.Symbol("x", real=True)
    # torch and numpy forms are derived from the sympy form and agree with it in the domain
    for entry in library:
        low, high = SAFE_RANGE.get(entry.name, (-1.5, 1.5))
        z = torch.linspace(low, high, 101, dtype=torch.float64)
        exact = sympy.lambdify(x, entry.sympy(x), "mpmath")
        reference = np.array([float(exact(float(v))) for v in z])
        np.testing.assert_allclose(entry.torch(z).numpy(), reference, rtol=1e-12, atol=1e-12, err_msg=entry.name)
        np.testing.assert_allclose(entry.numpy(z.numpy()), reference, rtol=1e-12, atol=1e-12, err_msg=entry.name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_guarded_forms_are_finite_with_finite_gradients_everywhere(dtype):
    z = torch.tensor(
        [-1e3, -10.0, -math.pi / 2, -1.0, -1e-9, 0.0, 1e-9, 1.0, math.pi / 2, 3 * math.pi / 2, 10.0, 1e3], dtype=dtype
    )
    for entry in default_library():
        point = z.clone().requires_grad_(True)
        value = entry.torch(point)
        (gradient,) = torch.autograd.grad(value.sum(), point)
        assert torch.isfinite(value).all(), (entry.name, value)
        assert torch.isfinite(gradient).all(), (entry.name, gradient)


@pytest.mark.parametrize("name", [n for n in REQUIRED if n != "0"])
def test_each_function_is_recovered_as_top_choice(name):
    library = default_library()
    generator = torch.Generator().manual_seed(sum(map(ord, name)))
    low, high = SAFE_RANGE.get(name, (-1.5, 1.5))
    a = 0.5 + 2.0 * torch.rand((), generator=generator, dtype=torch.float64)
    b = torch.rand((), generator=generator, dtype=torch.float64) - 0.5
    c = 0.5 + torch.rand((), generator=generator, dtype=torch.float64)
    d = torch.rand((), generator=generator, dtype=torch.float64) - 0.5
    z = low + (high - low) * torch.rand(500, generator=generator, dtype=torch.float64)
    x = (z - b) / a  # the edge's inputs, so that a * x + b spans the safe range
    y = c * library[name].torch(z) + d
    fit = fit_affine(x, y, library)
    complexity = torch.tensor([f.complexity for f in library], dtype=torch.float64)
    scores = symbolic_score(fit.r2[0], complexity, 0.8)
    best = fit.names[int(scores.argmin())]
    assert best in EQUIVALENT.get(name, {name}), (name, best)
    assert float(fit.r2[0, fit.names.index(best)]) > 0.999
    # the chosen parameters reproduce the data
    a_, b_, c_, d_ = fit.params(0, fit.names.index(best))
    predicted = c_ * library[best].torch(a_ * x + b_) + d_
    assert torch.sqrt(torch.mean((predicted - y) ** 2)) < 0.03 * y.std()


def test_step_breakpoints_are_the_best_split_by_brute_force():
    """Every split of the sorted samples fitted by numpy least squares (two levels): the search
    picks the one with the least error, its R^2 and a breakpoint between the split's samples."""
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(4, 60, generator=generator, dtype=torch.float64) * 4 - 2
    x[3, 20:40] = x[3, 5]  # ties: no split may fall between equal inputs
    y = torch.where(x > 0.3, 1.5, -0.5) + 0.4 * torch.randn(4, 60, generator=generator, dtype=torch.float64)
    y[1] = torch.sin(3 * x[1])  # not a step at all: still the best two-level split
    jump, r2 = _step_breakpoints(x, y)
    for e in range(4):
        xs, ys = np.sort(x[e].numpy()), y[e].numpy()[np.argsort(x[e].numpy())]
        total = np.sum((ys - ys.mean()) ** 2)
        errors = []
        for j in range(1, 60):
            if xs[j] == xs[j - 1]:
                continue
            design = np.stack([np.r_[np.zeros(j), np.ones(60 - j)], np.ones(60)], axis=1)
            _, residual, *_ = np.linalg.lstsq(design, ys, rcond=None)
            errors.append((float(residual[0]), j))
        error, j = min(errors)
        assert xs[j - 1] < float(jump[e]) < xs[j]
        assert float(r2[e]) == pytest.approx(1 - error / total, rel=1e-10)
    constant = _step_breakpoints(torch.zeros(1, 5, dtype=torch.float64), torch.arange(5.0, dtype=torch.float64).view(1, 5))
    assert float(constant[1][0]) == 0.0


def test_a_step_edge_snaps_to_sgn_with_its_breakpoint_between_the_right_samples():
    """A jump between two neighbouring samples: sgn's fit is exact (R^2 1), where a grid search
    over the breakpoint could land a sample off."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1000, generator=generator, dtype=torch.float64) * 2 - 1
    y = 0.7 * torch.sign(x - 0.123456) + 0.2
    library = default_library()
    fit = fit_affine(x, y, library)
    sgn = fit.names.index("sgn")
    assert float(fit.r2[0, sgn]) == pytest.approx(1.0, abs=1e-12)
    a, b, c, d = fit.params(0, sgn)
    predicted = c * torch.sign(a * x + b) + d
    torch.testing.assert_close(predicted, y, rtol=0, atol=1e-12)
    assert fit.names[int(symbolic_score(fit.r2[0], torch.tensor([f.complexity for f in library],
                                                                dtype=torch.float64), 0.8).argmin())] == "sgn"
    # a user's step with other levels (0 and 1), registered as one
    x_sym = sympy.Symbol("x", real=True)
    steps = Library()
    steps.register("heaviside", sympy.Heaviside(x_sym), 3, step=True, torch_fn=lambda z: (torch.sign(z) + 1) / 2)
    fit = fit_affine(x, y, steps)
    a, b, c, d = fit.params(0, 0)
    assert float(fit.r2[0, 0]) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(c * (torch.sign(a * x + b) + 1) / 2 + d, y, rtol=0, atol=1e-12)


def test_canonical_folds_an_exponential_shift_into_its_scale():
    """c exp(a x + b) = (c e^b) exp(a x): b goes to 0 (also where e^b alone would overflow)."""
    exp = default_library()["exp"]
    x = torch.linspace(-1, 1, 50, dtype=torch.float64)
    a, b, c, d = (torch.tensor(v, dtype=torch.float64) for v in ([6.3, -2.0], [9.8, 720.0], [5.6e-5, -1e-312], [0.1, 0.0]))
    a2, b2, c2, d2 = exp.canonical(a, b, c, d)
    assert (b2 == 0).all() and torch.equal(a2, a) and torch.equal(d2, d)
    torch.testing.assert_close(c2, torch.tensor([5.6e-5 * math.exp(9.8), -math.exp(math.log(1e-312) + 720.0)], dtype=torch.float64))
    for e in range(2):  # the same curve, c exp(a x + b) written as sign(c) exp(log|c| + a x + b)
        reference = torch.sign(c[e]) * torch.exp(torch.log(c[e].abs()) + a[e] * x + b[e]) + d[e]
        torch.testing.assert_close(c2[e] * exp.torch(a2[e] * x + b2[e]) + d2[e], reference)


def test_cd_are_the_least_squares_solution_at_the_found_ab():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 300, generator=generator, dtype=torch.float64) * 2 - 1
    y = torch.stack([torch.sin(2 * x[0]) + 0.1 * torch.randn(300, generator=generator, dtype=torch.float64), x[1] ** 3])
    library = default_library().subset(["sin", "x^2", "exp"])
    fit = fit_affine(x, y, library, polish=0)
    for e in range(2):
        for n, entry in enumerate(library):
            a, b, c, d = fit.params(e, n)
            design = np.stack([entry.numpy(a * x[e].numpy() + b), np.ones(300)], axis=1)
            (c_ref, d_ref), *_ = np.linalg.lstsq(design, y[e].numpy(), rcond=None)
            assert c == pytest.approx(c_ref, rel=1e-8, abs=1e-10) and d == pytest.approx(d_ref, rel=1e-8, abs=1e-10)


def test_degenerate_edges_never_crash():
    library = default_library().subset(["x", "sin", "log", "1/x"])
    x = torch.linspace(-1, 1, 50, dtype=torch.float64)
    constant_edge = fit_affine(x, torch.full_like(x, 0.7), library)
    assert constant_edge.reason == ["constant edge"] and (constant_edge.r2 == 1).all() and (constant_edge.c == 0).all()
    constant_input = fit_affine(torch.full_like(x, 0.3), torch.sin(x), library)
    assert constant_input.reason == ["constant input"] and (constant_input.r2 == 0).all()
    nan_function = Library([SymbolicFunction("bad", sympy.Symbol("x"), 1, torch_fn=lambda z: z * float("nan"))])
    undefined = fit_affine(x, torch.sin(x), nan_function)
    assert float(undefined.r2[0, 0]) == 0.0
    with pytest.raises(ValueError, match="finite"):
        fit_affine(x, x * float("nan"), library)
    with pytest.raises(ValueError, match="same shape"):
        fit_affine(x, x[:10], library)


def test_registry_user_functions_and_pickling():
    library = default_library()
    symbol = sympy.Symbol("x")
    library.register("J0", sympy.besselj(0, symbol), 3, torch_fn=torch.special.bessel_j0)
    with pytest.raises(ValueError, match="already"):
        library.register("J0", sympy.besselj(0, symbol), 3)
    with pytest.raises(KeyError, match="no function"):
        library["nope"]
    x = torch.linspace(0, 5, 200, dtype=torch.float64)
    fit = fit_affine(x, 2 * torch.special.bessel_j0(1.5 * x), library.subset(["J0", "sin", "x^2"]))
    assert fit.names[int(fit.r2[0].argmax())] == "J0"
    assert len(default_library()) == len(library) - 1  # no global state
    for entry in library:
        copy = pickle.loads(pickle.dumps(entry))
        assert torch.equal(copy.torch(x), entry.torch(x))
    assert set(HELLOKAN_LIBRARY) <= set(library.names)
