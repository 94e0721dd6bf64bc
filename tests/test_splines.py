"""Splines against independent references: scipy's BSpline, numpy least squares, gradcheck."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import BSpline

from conftest import random_knots
from kanlab import splines


def _inside(knots: torch.Tensor, k: int, count: int, generator) -> torch.Tensor:
    low, high = splines.knot_span(knots, k)
    unit = torch.rand(count, knots.shape[0], generator=generator, dtype=torch.float64)
    return low + (high - low) * unit


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_basis_matches_scipy_design_matrix(k):
    generator = torch.Generator().manual_seed(k)
    knots = random_knots(3, 7 + 2 * k + 1, generator)
    x = _inside(knots, k, 200, generator)
    basis = splines.bspline_basis(x, knots, k)
    for i in range(3):
        t = knots[i].numpy()
        reference = BSpline.design_matrix(x[:, i].numpy(), t, k).toarray()
        np.testing.assert_allclose(basis[:, i].numpy(), reference, rtol=0, atol=1e-12)


def test_uniform_knots_layout():
    knots = splines.uniform_knots(2, grid=4, k=3, grid_range=(-1, 1), dtype=torch.float64)
    assert knots.shape == (2, 4 + 2 * 3 + 1)
    np.testing.assert_allclose(knots[0].numpy(), np.linspace(-1 - 1.5, 1 + 1.5, 11), atol=1e-15)
    assert torch.equal(knots[0], knots[1])


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 5), grid=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_partition_of_unity_nonnegativity_and_local_support(k, grid, seed):
    generator = torch.Generator().manual_seed(seed)
    knots = random_knots(2, grid + 2 * k + 1, generator)
    x = _inside(knots, k, 64, generator)
    basis = splines.bspline_basis(x, knots, k)
    assert basis.shape == (64, 2, grid + k)
    assert (basis >= 0).all()
    torch.testing.assert_close(basis.sum(-1), torch.ones(64, 2, dtype=torch.float64), rtol=0, atol=1e-12)
    # local support: at most k + 1 non-zero bases, and basis m vanishes outside [t_m, t_{m+k+1})
    assert ((basis > 0).sum(-1) <= k + 1).all()
    m = torch.arange(grid + k)
    left = knots[:, m].unsqueeze(0)
    right = knots[:, m + k + 1].unsqueeze(0)
    outside = (x.unsqueeze(-1) < left) | (x.unsqueeze(-1) >= right)
    assert (basis[outside] == 0).all()


def test_basis_is_zero_outside_the_extended_knots():
    knots = splines.uniform_knots(1, 5, 3, dtype=torch.float64)
    x = torch.tensor([[-10.0], [knots[0, -1].item()], [10.0]], dtype=torch.float64)
    assert (splines.bspline_basis(x, knots, 3) == 0).all()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_basis_gradcheck_and_gradgradcheck(k):
    generator = torch.Generator().manual_seed(0)
    knots = random_knots(2, 6 + 2 * k + 1, generator)
    x = _inside(knots, k, 9, generator).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: splines.bspline_basis(v, knots, k), (x,))
    if k >= 2:
        assert torch.autograd.gradgradcheck(lambda v: splines.bspline_basis(v, knots, k), (x,))


def test_fit_coefficients_matches_numpy_lstsq():
    generator = torch.Generator().manual_seed(1)
    knots = random_knots(3, 6 + 2 * 3 + 1, generator)
    x = _inside(knots, 3, 150, generator)
    y = torch.randn(150, 2, 3, generator=generator, dtype=torch.float64)
    coef = splines.fit_coefficients(x, y, knots, 3)
    assert coef.shape == (2, 3, 9)
    basis = splines.bspline_basis(x, knots, 3).numpy()
    for i in range(3):
        reference, *_ = np.linalg.lstsq(basis[:, i], y[:, :, i].numpy(), rcond=None)
        np.testing.assert_allclose(coef[:, i].numpy(), reference.T, atol=1e-10)


def test_fit_coefficients_is_bit_stable():
    generator = torch.Generator().manual_seed(2)
    knots = random_knots(4, 20, generator)
    x = _inside(knots, 3, 300, generator)
    y = torch.randn(300, 5, 4, generator=generator, dtype=torch.float64)
    first = splines.fit_coefficients(x, y, knots, 3)
    for _ in range(3):
        assert torch.equal(first, splines.fit_coefficients(x, y, knots, 3))


def test_fit_coefficients_degenerate_systems_do_not_crash():
    knots = splines.uniform_knots(1, 10, 3, dtype=torch.float64)
    few = torch.tensor([[0.1], [0.2]], dtype=torch.float64)  # 2 samples, 13 unknowns
    coef = splines.fit_coefficients(few, torch.ones(2, 1, 1, dtype=torch.float64), knots, 3)
    assert torch.isfinite(coef).all()
    fitted = splines.spline_values(few, knots, coef, 3)
    torch.testing.assert_close(fitted, torch.ones(2, 1, 1, dtype=torch.float64))
    outside = torch.full((5, 1), 50.0, dtype=torch.float64)  # touches no basis at all
    assert (splines.fit_coefficients(outside, torch.ones(5, 1, 1, dtype=torch.float64), knots, 3) == 0).all()


@pytest.mark.parametrize(
    "x, y, message",
    [
        (torch.zeros(0, 1), torch.zeros(0, 1, 1), "at least one sample"),
        (torch.full((3, 1), float("nan")), torch.zeros(3, 1, 1), "NaN"),
        (torch.zeros(3, 1), torch.zeros(4, 1, 1), "y must be"),
        (torch.zeros(3), torch.zeros(3, 1, 1), "2-D"),
    ],
)
def test_fit_coefficients_bad_input(x, y, message):
    knots = splines.uniform_knots(1, 5, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match=message):
        splines.fit_coefficients(x, y, knots, 3)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_degree_and_grid_are_checked(bad):
    with pytest.raises(ValueError, match="k \\(spline degree\\)"):
        splines.uniform_knots(1, 5, bad)
    with pytest.raises(ValueError, match="grid"):
        splines.uniform_knots(1, bad, 3)


def test_knots_from_samples_mix_and_degenerate_input():
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(500, 2, generator=generator, dtype=torch.float64) ** 3
    x[:, 1] = 0.25  # a constant input
    knots = splines.knots_from_samples(x, grid=4, k=3, grid_eps=0.0, margin=0.0)
    interior = knots[:, 3:-3]
    expected = torch.quantile(x[:, 0], torch.linspace(0, 1, 5, dtype=torch.float64))
    torch.testing.assert_close(interior[0], expected)
    assert (torch.diff(knots[1]) > 0).all()  # the constant input still gets a valid grid
    low, high = x[:, 0].min().item(), x[:, 0].max().item()
    uniform = splines.knots_from_samples(x, grid=4, k=3, grid_eps=1.0, margin=0.0)[0, 3:-3]
    torch.testing.assert_close(uniform, torch.linspace(low, high, 5, dtype=torch.float64))
    # the default margin widens both ends by the mean gap between sorted samples, only the ends
    widen = (high - low) / (x.shape[0] - 1)
    for eps in (0.0, 0.3, 1.0):
        plain = splines.knots_from_samples(x, grid=4, k=3, grid_eps=eps, margin=0.0)[0, 3:-3]
        wide = splines.knots_from_samples(x, grid=4, k=3, grid_eps=eps)[0, 3:-3]
        torch.testing.assert_close(wide[[0, -1]], torch.tensor([low - widen, high + widen], dtype=torch.float64))
        uniform_part = torch.linspace(low - widen, high + widen, 5, dtype=torch.float64)[1:-1]
        torch.testing.assert_close(wide[1:-1], plain[1:-1] + eps * (uniform_part - torch.linspace(low, high, 5, dtype=torch.float64)[1:-1]))
    with pytest.raises(ValueError, match="margin"):
        splines.knots_from_samples(x, grid=4, k=3, margin=-1.0)


@pytest.mark.parametrize("new_grid", [10, 13, 40])
def test_refit_spline_keeps_the_function(new_grid):
    generator = torch.Generator().manual_seed(4)
    knots = splines.uniform_knots(2, 5, 3, dtype=torch.float64)
    samples = torch.rand(400, 2, generator=generator, dtype=torch.float64) * 2 - 1
    # a learned-looking spline: the fit of smooth functions of different shapes
    scales = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 3, 1)
    smooth = torch.sin(scales * samples.unsqueeze(1)) + samples.unsqueeze(1) ** 2
    coef = splines.fit_coefficients(samples, smooth, knots, 3)
    new_knots = splines.knots_from_samples(samples, new_grid, 3, 0.02)
    new_coef = splines.refit_spline(knots, coef, 3, new_knots, samples)
    before = splines.spline_values(samples, knots, coef, 3)
    after = splines.spline_values(samples, new_knots, new_coef, 3)
    assert ((after - before).norm() / before.norm()).item() < 1e-3
    if new_grid == 10:  # knot insertion into a uniform grid: exact
        exact = splines.refit_spline(knots, coef, 3, splines.uniform_knots(2, 10, 3, dtype=torch.float64), samples)
        torch.testing.assert_close(
            splines.spline_values(samples, splines.uniform_knots(2, 10, 3, dtype=torch.float64), exact, 3),
            before, rtol=0, atol=1e-12,
        )


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_subdivide_knots_keeps_old_knots_and_splines_exactly(factor):
    generator = torch.Generator().manual_seed(factor)
    knots = random_knots(2, 5 + 2 * 3 + 1, generator)
    fine = splines.subdivide_knots(knots, 3, factor)
    assert fine.shape == (2, 5 * factor + 2 * 3 + 1)
    torch.testing.assert_close(fine[:, 3 :: factor][:, : 5 + 1], knots[:, 3:-3])
    coef = torch.randn(2, 2, 8, generator=generator, dtype=torch.float64)
    x = _inside(knots, 3, 200, generator)
    new_coef = splines.refit_spline(knots, coef, 3, fine, x)
    torch.testing.assert_close(
        splines.spline_values(x, fine, new_coef, 3), splines.spline_values(x, knots, coef, 3), rtol=0, atol=1e-10
    )


def _fast_cases():
    generator = torch.Generator().manual_seed(11)
    for k in (1, 2, 3, 4, 5):
        uniform = splines.uniform_knots(3, 6, k, grid_range=(-1, 1), dtype=torch.float64)
        adapted = splines.knots_from_samples(torch.rand(200, 3, generator=generator, dtype=torch.float64) ** 2, 6, k, 0.02)
        yield k, uniform, True
        yield k, uniform, False
        yield k, adapted, False


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_fast_paths_equal_the_reference_values_and_derivatives(dtype, tolerance):
    """Local (general and closed-form uniform) bases vs Cox-de Boor: values, first and second
    derivatives, on points inside, at the ends of and far outside the knots. Relative
    difference in norm below ``tolerance`` (second derivatives 100x), and every value within
    20 ulps of 1."""
    generator = torch.Generator().manual_seed(12)
    for k, knots, uniform in _fast_cases():
        knots = knots.to(dtype)
        assert not uniform or splines.is_uniform(knots)
        x = (torch.rand(300, 3, generator=generator, dtype=torch.float64) * 8 - 4).to(dtype)
        x[:5] = knots[:, 0]
        x[5:10] = knots[:, -1]
        x.requires_grad_()
        fast = splines.bspline_basis(x, knots, k, uniform=uniform)
        reference = splines.bspline_basis_reference(x, knots, k)
        assert _relative(fast, reference) < tolerance, (k, uniform)
        assert (fast - reference).abs().max().item() < 20 * torch.finfo(dtype).eps, (k, uniform)
        weights = torch.randn(fast.shape, generator=generator, dtype=torch.float64).to(dtype)
        (g_fast,) = torch.autograd.grad((fast * weights).sum(), x, create_graph=True)
        (g_ref,) = torch.autograd.grad((reference * weights).sum(), x, create_graph=True)
        assert _relative(g_fast, g_ref) < tolerance, (k, uniform)
        if k >= 2:
            (h_fast,) = torch.autograd.grad(g_fast.sum(), x)
            (h_ref,) = torch.autograd.grad(g_ref.sum(), x)
            assert _relative(h_fast, h_ref) < tolerance * 100, (k, uniform)


@pytest.mark.parametrize("uniform", [True, False])
def test_basis_features_gradcheck_with_base_column(uniform):
    knots = splines.uniform_knots(2, 5, 3, dtype=torch.float64)
    if not uniform:
        knots = splines.knots_from_samples(torch.rand(50, 2, dtype=torch.float64) * 1.8 - 0.9, 5, 3, 0.1)
    x = (torch.rand(7, 2, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    base = torch.rand(7, 2, dtype=torch.float64, requires_grad=True)
    run = lambda a, b: splines.basis_features(a, knots, 3, b, uniform=uniform)
    assert torch.autograd.gradcheck(run, (x, base))
    assert torch.autograd.gradgradcheck(run, (x, base))
    features = run(x, base).reshape(7, 9, 2).transpose(1, 2)  # slot-major columns
    torch.testing.assert_close(features[..., :8], splines.bspline_basis_reference(x, knots, 3))
    torch.testing.assert_close(features[..., 8], base)


def test_is_uniform():
    assert splines.is_uniform(splines.uniform_knots(4, 100, 3, dtype=torch.float32))
    assert splines.is_uniform(splines.knots_between(torch.tensor([0.0, -3.0]), torch.tensor([1.0, 5.0]), 7, 2))
    assert not splines.is_uniform(splines.knots_from_samples(torch.rand(100, 2) ** 2, 5, 3, 0.02))
