"""torch.func through KAN and KANLinear: vmap, grad, jacrev, jacfwd and hessian per point, on
the compiled kernel's path and the torch path, equal in float64 to double-backward autograd
(the way PINN code took per-point derivatives before torch.func)."""

import pytest
import torch
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, vmap

import kanlab
from kanlab import native

PATHS = ["default", "torch"]


def _path(name):
    return native.disabled() if name == "torch" else native.use(True)


def _model():
    return kanlab.KAN([2, 4, 1], grid=5, k=3, seed=0, dtype=torch.float64)


def _points(n=17):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 2, generator=g, dtype=torch.float64) * 2.4 - 1.2  # some outside the grid


def _autograd_derivatives(model, x):
    """Per-point gradient and Hessian by autograd with create_graph (the reference)."""
    x = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    rows = [torch.autograd.grad(g[:, j].sum(), x, retain_graph=True)[0] for j in range(x.shape[1])]
    return g.detach(), torch.stack(rows, dim=1)  # (N, d), (N, d, d)


@pytest.mark.parametrize("path", PATHS)
def test_vmap_grad_jacobians_and_hessian_equal_autograd(path):
    model, x = _model(), _points()
    with _path(path):
        g_ref, h_ref = _autograd_derivatives(model, x)

        def f(point):
            return model(point.unsqueeze(0)).squeeze()

        torch.testing.assert_close(vmap(grad(f))(x), g_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(vmap(jacrev(f))(x), g_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(vmap(jacfwd(f))(x), g_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(vmap(hessian(f))(x), h_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(vmap(f)(x), model(x).squeeze(1), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("path", PATHS)
def test_kanlinear_under_vmap_and_jacrev(path):
    layer = kanlab.KANLinear(3, 5, grid=7, dtype=torch.float64, grid_update=None, generator=torch.Generator().manual_seed(2))
    x = torch.randn(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with _path(path):
        jac = vmap(jacrev(layer))(x)  # (N, out, in)
        reference = torch.stack([torch.autograd.functional.jacobian(layer, row) for row in x])
        torch.testing.assert_close(jac, reference, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(vmap(layer)(x), layer(x), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("path", PATHS)
def test_grad_for_parameters_through_functional_call(path):
    """The PINN / meta-learning pattern: gradients for the parameters by torch.func.grad."""
    model, x = _model(), _points()
    y = torch.sin(x[:, :1])
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p):
        return ((functional_call(model, p, (x,)) - y) ** 2).mean()

    with _path(path):
        grads = grad(loss)(params)
        model.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-11, atol=1e-13, msg=name)
