"""KANLinear: shapes, references for the forward pass, gradients, grid changes, bad input."""

import pytest
import torch
from torch import nn

import functools

import kanlab
from kanlab import splines

# the layer's mathematics, with the grid where the test puts it (grid keeping: tests/test_grid_keeping.py)
KANLinear = functools.partial(kanlab.KANLinear, grid_update=None)


def _layer(**options):
    generator = torch.Generator().manual_seed(0)
    options.setdefault("dtype", torch.float64)
    return KANLinear(3, 4, generator=generator, **options)


def _reference_forward(layer: KANLinear, x: torch.Tensor) -> torch.Tensor:
    """The definition, edge by edge, in plain loops (independent of the fast path)."""
    out = torch.zeros(x.shape[0], layer.out_features, dtype=x.dtype)
    basis = splines.bspline_basis(x, layer.grid, layer.k)
    for j in range(layer.out_features):
        for i in range(layer.in_features):
            spline = basis[:, i] @ layer.coef[j, i]
            phi = layer.scale_base[j, i] * layer.base_fun(x[:, i]) + layer.scale_sp[j, i] * spline
            out[:, j] += layer.mask[j, i] * phi
    return out


def test_forward_matches_edge_by_edge_definition_inside_and_outside_the_grid():
    layer = _layer()
    with torch.no_grad():
        layer.mask[1, 2] = 0
        layer.coef.normal_(generator=torch.Generator().manual_seed(5))
    x = torch.linspace(-3, 3, 60, dtype=torch.float64).unsqueeze(1).repeat(1, 3)
    torch.testing.assert_close(layer(x), _reference_forward(layer, x), rtol=1e-12, atol=1e-12)
    far = torch.full((2, 3), 100.0, dtype=torch.float64)  # spline part vanishes: base only
    expected = torch.nn.functional.silu(far) @ (layer.scale_base * layer.mask).T
    torch.testing.assert_close(layer(far), expected)


def test_edge_activations_sum_to_the_output_and_mean_abs_matches():
    layer = _layer()
    x = torch.rand(50, 3, dtype=torch.float64) * 2 - 1
    acts = layer.edge_activations(x)
    assert acts.shape == (50, 4, 3)
    torch.testing.assert_close(acts.sum(-1), layer(x))
    torch.testing.assert_close(layer.edge_mean_abs(x, chunk_size=7), acts.abs().mean(0))


def test_edge_mean_abs_gradients_match_the_explicit_computation():
    layer = _layer()
    x = torch.rand(40, 3, dtype=torch.float64) * 2 - 1
    layer.edge_mean_abs(x, chunk_size=16).sum().backward()
    fast = layer.coef.grad.clone()
    layer.coef.grad = None
    layer.edge_activations(x).abs().mean(0).sum().backward()
    torch.testing.assert_close(fast, layer.coef.grad)


def test_dropin_shapes_and_module_conventions():
    layer = KANLinear(5, 2)
    assert layer(torch.rand(7, 5)).shape == (7, 2)
    assert layer(torch.rand(3, 4, 5)).shape == (3, 4, 2)
    assert layer(torch.rand(5)).shape == (2,)
    assert "in_features=5, out_features=2, grid=5, k=3" in repr(layer)
    assert "grid" in dict(layer.named_buffers()) and "mask" in dict(layer.named_buffers())
    assert {name for name, _ in layer.named_parameters()} == {"coef", "scale_base", "scale_sp", "symbolic_affine"}
    assert KANLinear(5, 2, bias=True).bias.shape == (2,)
    assert KANLinear(2, 2, dtype=torch.float64).grid.dtype == torch.float64


def test_reset_parameters_is_reproducible_with_a_generator():
    first = KANLinear(3, 3, generator=torch.Generator().manual_seed(7))
    second = KANLinear(3, 3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first.coef, second.coef) and torch.equal(first.scale_base, second.scale_base)
    first.reset_parameters(torch.Generator().manual_seed(8))
    assert not torch.equal(first.coef, second.coef)
    points = first.grid[:, 3:-3].T.contiguous()  # the spline passes through small noise at the grid points
    values = splines.spline_values(points, first.grid, first.coef, 3)
    assert values.abs().max() <= 0.3 / 2 / 5 + 1e-6 and values.abs().max() > 0


@pytest.mark.parametrize("base_fun", ["silu", "identity", "zero", None, torch.sin])
def test_base_functions(base_fun):
    layer = _layer(base_fun=base_fun)
    x = torch.rand(10, 3, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _reference_forward(layer, x))


def test_trainable_toggles():
    layer = KANLinear(2, 2, sb_trainable=False, sp_trainable=False)
    assert not layer.scale_base.requires_grad and not layer.scale_sp.requires_grad


def test_gradcheck_and_gradgradcheck_layer():
    layer = _layer()
    x = (torch.rand(6, 3, dtype=torch.float64) * 1.8 - 0.9).requires_grad_()
    assert torch.autograd.gradcheck(layer, (x,))
    assert torch.autograd.gradgradcheck(layer, (x,))
    coef = layer.coef.detach().clone().requires_grad_()

    def by_coef(c):
        return torch.func.functional_call(layer, {"coef": c}, (x.detach(),))

    assert torch.autograd.gradcheck(by_coef, (coef,))


def test_update_grid_keeps_the_function_on_the_samples():
    layer = _layer()
    with torch.no_grad():
        layer.coef.copy_(torch.sin(torch.linspace(0, 3, layer.n_basis, dtype=torch.float64)) * 0.3)
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.6 - 0.9
    before = layer(x)
    layer.update_grid(x)
    after = layer(x)
    assert ((after - before).norm() / before.norm()).item() < 1e-3
    widen = (x.max(0).values - x.min(0).values) / (x.shape[0] - 1)  # the margin: one mean sample gap
    torch.testing.assert_close(layer.grid[:, 3], x.min(0).values - widen)  # the grid now spans the samples
    torch.testing.assert_close(layer.grid[:, -4], x.max(0).values + widen)


def test_refined_keeps_the_function_and_leaves_the_original():
    layer = _layer()
    with torch.no_grad():
        layer.coef.copy_(torch.cos(torch.linspace(0, 4, layer.n_basis, dtype=torch.float64)) * 0.2)
    x = torch.rand(300, 3, dtype=torch.float64) * 2 - 1
    old_grid = layer.grid.clone()
    for samples in (x, None):
        finer = layer.refined(20, samples)
        assert finer.grid_size == 20 and finer.coef.shape == (4, 3, 23) and finer.grid.shape == (3, 27)
        assert ((finer(x) - layer(x)).norm() / layer(x).norm()).item() < 1e-3
    assert torch.equal(layer.grid, old_grid) and layer.grid_size == 5


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.rand(4, 2, dtype=torch.float64), ValueError, "3 features"),
        (torch.rand(4, 3, dtype=torch.float32), TypeError, "dtype"),
        ([[0.0, 0.0, 0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_input(x, error, message):
    with pytest.raises(error, match=message):
        _layer()(x)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"grid": 0}, "grid"),
        ({"k": 0}, "k \\(spline degree\\)"),
        ({"grid_eps": 2.0}, "grid_eps"),
        ({"base_fun": "nope"}, "base_fun"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        KANLinear(2, 2, **options)


def test_kanlinear_in_sequential_trains_with_adam_on_a_dataloader():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(256, 2, generator=generator) * 2 - 1
    y = torch.sin(3 * x[:, :1]) * x[:, 1:]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True, generator=generator
    )
    net = nn.Sequential(
        KANLinear(2, 8, generator=generator), nn.LayerNorm(8), KANLinear(8, 1, generator=generator)
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    start = nn.functional.mse_loss(net(x), y).item()
    for _ in range(30):
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.mse_loss(net(xb), yb).backward()
            optimizer.step()
    assert nn.functional.mse_loss(net(x), y).item() < 0.1 * start


@pytest.mark.parametrize("adapted", [False, True])
def test_far_out_and_nan_inputs_do_not_crash_or_poison(adapted):
    """Inputs like 1e30 get the residual alone (finite, exact); NaN stays NaN in its row only."""
    layer = _layer()
    if adapted:
        layer.update_grid(torch.rand(100, 3, dtype=torch.float64))
        assert not layer.uniform_grid
    x = torch.tensor([[1e30, -1e30, 1e300], [0.1, float("nan"), 0.2], [0.3, 0.4, 0.5]], dtype=torch.float64)
    out = layer(x)
    expected = torch.nn.functional.silu(x[0]) @ (layer.scale_base * layer.mask).T
    torch.testing.assert_close(out[0], expected)
    assert torch.isnan(out[1]).all() and torch.isfinite(out[2]).all()
    torch.testing.assert_close(out[2], _reference_forward(layer, x[2:]).squeeze(0))


def test_nan_input_stays_nan_without_a_residual():
    layer = _layer(base_fun="zero")
    out = layer(torch.tensor([[float("nan"), 0.1, 0.2], [0.1, 0.2, 0.3]], dtype=torch.float64))
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1]).all()


def test_a_layer_of_symbolic_edges_only_skips_the_spline_branch():
    """Every edge symbolic: the output is the sum of c f(a x + b) + d (the masked spline branch
    adds nothing and is not computed), its gradients reach the affine parameters and not the
    spline's, and its regulariser norms (spline branch) are zero."""
    from kanlab.functions import default_library

    library = default_library()
    layer = KANLinear(2, 2, grid=5, dtype=torch.float64)
    choices = {(0, 0): ("sin", (2.0, 0.5, 1.5, 0.1)), (0, 1): ("x^2", (1.0, -0.2, 0.7, 0.0)),
               (1, 0): ("exp", (0.5, 0.0, 1.0, -1.0)), (1, 1): ("tanh", (3.0, 0.1, -2.0, 0.3))}
    for (j, i), (name, params) in choices.items():
        layer.set_symbolic(j, i, library[name], params)
    x = torch.rand(40, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    out, norms = layer.forward_with_edge_norms(x)
    out.square().sum().backward()
    affine = layer.symbolic_affine.detach().clone().requires_grad_(True)
    expected = torch.zeros(40, 2, dtype=torch.float64)
    for (j, i), (name, _) in choices.items():
        a, b, c, d = affine[j, i]
        expected[:, j] = expected[:, j] + c * library[name].torch(a * x[:, i] + b) + d
    expected.square().sum().backward()
    torch.testing.assert_close(out.detach(), expected.detach(), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(layer.symbolic_affine.grad, affine.grad, rtol=1e-12, atol=1e-12)
    assert layer.coef.grad is None and torch.equal(norms, torch.zeros(2, 2, dtype=torch.float64))
