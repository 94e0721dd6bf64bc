"""The Triton kernels of the local form (``kanlab.gpu``) against the dense torch path.

On a CUDA machine the kernel tests run on the GPU. Elsewhere ``test_kernels_in_the_interpreter``
runs this file again in a subprocess with ``TRITON_INTERPRET=1``, where Triton's interpreter
runs the same kernels on CPU tensors (the variable must be set before Triton is imported).
"""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import kanlab
from kanlab import gpu, splines

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
on_kernels = pytest.mark.skipif(not (torch.cuda.is_available() or gpu.interpreting()),
                                reason="needs a CUDA device or TRITON_INTERPRET=1")


@pytest.mark.skipif(gpu.interpreting() or torch.cuda.is_available(), reason="runs the file itself")
def test_kernels_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", __file__],
                            capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # every kernel test ran there (skipped: this test, and the compiling ones, which run here)
    assert "needs a CUDA device" not in result.stdout and re.search(r"\b1[3-9] passed", result.stdout), result.stdout[-2000:]


def _layer(n_in, n_out, grid, k, uniform, x):
    layer = kanlab.KANLinear(n_in, n_out, grid=grid, k=k, grid_update=None, device=DEVICE)
    if not uniform:
        layer.update_grid(x)
    assert layer.plan.uniform == uniform
    return layer


def _dense(x, weight, plan):
    """The reference: dense basis features (torch path) times the weight."""
    return splines.basis_features(x, plan) @ weight.permute(2, 1, 0).reshape(weight.shape[2], -1).T


@on_kernels
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("n, n_in, n_out, grid, k", [(50, 3, 20, 5, 3), (97, 4, 70, 40, 3), (40, 2, 17, 7, 1),
                                                      (33, 3, 9, 6, 2), (64, 2, 16, 9, 5)])
def test_spline_product_matches_the_dense_form(uniform, n, n_in, n_out, grid, k):
    gen = torch.Generator().manual_seed(n + grid)
    x = 1.4 * torch.randn(n, n_in, generator=gen).to(DEVICE)  # a share outside [-1, 1]
    layer = _layer(n_in, n_out, grid, k, uniform, x)
    x[:4] = layer.grid[:, k:k + 4].T  # exactly on knots
    x[4, 0] = layer.grid[0, -1]  # on the last knot: outside
    weight = torch.randn(n_in, layer.n_basis, n_out, generator=gen).to(DEVICE)
    grad = torch.randn(n, n_out, generator=gen).to(DEVICE)
    xr, wr = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    reference = _dense(xr, wr, layer.plan)
    reference.backward(grad)
    xk, wk = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    out = gpu.spline_product(xk, wk, layer.plan)
    out.backward(grad)
    scale = reference.abs().max().item()
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6 * scale)
    torch.testing.assert_close(wk.grad, wr.grad, rtol=1e-5, atol=1e-6 * wr.grad.abs().max().item())
    torch.testing.assert_close(xk.grad, xr.grad, rtol=1e-4, atol=1e-5 * xr.grad.abs().max().item())


@on_kernels
def test_second_derivatives_take_the_dense_form():
    x = torch.rand(30, 2, device=DEVICE).mul(1.8).sub(0.9).requires_grad_(True)
    layer = _layer(2, 3, 5, 3, True, x)
    weight = torch.randn(2, layer.n_basis, 3, device=DEVICE)
    out = gpu.spline_product(x, weight, layer.plan)
    (dx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    (ddx,) = torch.autograd.grad(dx.sum(), x)
    xr = x.detach().clone().requires_grad_(True)
    (dxr,) = torch.autograd.grad(_dense(xr, weight, layer.plan).sum(), xr, create_graph=True)
    (ddxr,) = torch.autograd.grad(dxr.sum(), xr)
    torch.testing.assert_close(dx, dxr, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ddx, ddxr, rtol=1e-4, atol=1e-3)


@on_kernels
def test_kan_linear_takes_the_kernels_and_matches_the_torch_path(monkeypatch):
    torch.manual_seed(0)
    layer = kanlab.KANLinear(5, 18, grid=8, bias=True, device=DEVICE)
    x = 2 * torch.randn(3, 40, 5, device=DEVICE)
    layer(x)  # grid keeping moves the knots over x (general knots)
    layer.eval()
    calls = []
    product = gpu.spline_product
    monkeypatch.setattr(gpu, "spline_product", lambda *a: calls.append(1) or product(*a))
    x1 = x.clone().requires_grad_(True)
    y1 = layer(x1)
    y1.square().sum().backward()
    grads1 = [p.grad.clone() for p in (layer.coef, layer.scale_sp, layer.scale_base, layer.bias)]
    assert calls and y1.shape == (3, 40, 18)
    layer.zero_grad()
    monkeypatch.setattr(gpu, "takes", lambda *a: False)
    x2 = x.clone().requires_grad_(True)
    y2 = layer(x2)
    y2.square().sum().backward()
    grads2 = [p.grad for p in (layer.coef, layer.scale_sp, layer.scale_base, layer.bias)]
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    for a, b in zip(grads1, grads2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@on_kernels
def test_a_plain_training_loop_on_the_kernels_follows_the_torch_path(monkeypatch):
    """Adam steps on nn.Sequential of KANLinear (grid keeping on) give the torch path's parameters."""
    torch.manual_seed(0)
    x = 2 * torch.randn(48, 3, device=DEVICE)
    y = torch.sin(2 * x[:, :1]) * x[:, 1:2] + x[:, 2:3] ** 2

    def train(model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(4):
            optimizer.zero_grad()
            (model(x) - y).square().mean().backward()
            optimizer.step()
        return model

    model = nn.Sequential(kanlab.KANLinear(3, 4, device=DEVICE), kanlab.KANLinear(4, 1, device=DEVICE))
    twin = copy.deepcopy(model)
    train(model)
    monkeypatch.setattr(gpu, "takes", lambda *a: False)
    train(twin)
    assert int(model[0].grid_steps) == 4
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)


def test_a_failing_kernel_falls_back_to_the_dense_path(monkeypatch, caplog):
    class CompilationError(Exception):
        pass

    CompilationError.__module__ = "triton.compiler.errors"  # as Triton's own errors are

    def broken(*args):
        raise CompilationError("no such instruction")

    monkeypatch.setattr(gpu, "_forward", broken)
    monkeypatch.setattr(gpu, "_grad_x", broken)
    monkeypatch.setattr(gpu, "_state", {"failed": False})
    x = torch.randn(20, 2, requires_grad=True)
    layer = _layer(2, 3, 5, 3, True, x)
    weight = torch.randn(2, layer.n_basis, 3, requires_grad=True)
    with caplog.at_level("WARNING", logger="kanlab.gpu"):
        out = gpu.spline_product(x, weight, layer.plan)
    assert gpu._state["failed"] and "dense torch path" in caplog.text
    assert not gpu.takes(x.detach().cuda() if torch.cuda.is_available() else x.detach(), 3)
    out.square().sum().backward()
    xr, wr = x.detach().requires_grad_(True), weight.detach().requires_grad_(True)
    _dense(xr, wr, layer.plan).square().sum().backward()
    torch.testing.assert_close(out, _dense(xr, wr, layer.plan))
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(weight.grad, wr.grad)


def test_other_errors_are_not_swallowed(monkeypatch):
    monkeypatch.setattr(gpu, "_forward", lambda *a: 1 / 0)
    monkeypatch.setattr(gpu, "_state", {"failed": False})
    x = torch.randn(4, 2)
    layer = _layer(2, 3, 5, 3, True, x)
    with pytest.raises(ZeroDivisionError):
        gpu.spline_product(x, torch.randn(2, layer.n_basis, 3), layer.plan)
    assert not gpu._state["failed"]
    with pytest.raises(ValueError, match="weight"):
        gpu.spline_product(x, torch.randn(2, layer.n_basis + 1, 3), layer.plan)
    with pytest.raises(TypeError, match="float32"):
        gpu.spline_product(x.double(), torch.randn(2, layer.n_basis, 3).double(), layer.plan)


@pytest.mark.skipif(gpu.interpreting(), reason="compiles for the GPU")
@pytest.mark.parametrize("arch", [80, 90])
def test_kernels_compile_for_cuda(arch, monkeypatch, tmp_path):
    """Triton's compiler, down to the GPU binary, needs no GPU: every kernel and knot kind for
    the H100 (sm_90) at degrees 3 and 5, the A100 (sm_80) at 1 and 3."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kanlab import _triton_kernels as kernels

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    for k, uniform in ((3, True), (3, False), (5, False)) if arch == 90 else ((1, True), (3, False)):
        for kernel, extra in ((kernels.spline_forward, {}), (kernels.spline_grad_x, {}),
                              (kernels.spline_grad_w, dict(WINDOW=16, IEEE=True))):
            constants = dict(K=k, UNIFORM=uniform, SEARCH=5, BLOCK_N=32, BLOCK_O=64, **extra)
            names = list(inspect.signature(kernel.fn).parameters)
            signature = {name: "constexpr" if name in constants else
                         ("*i32" if name == "order_ptr" else "*fp32") if name.endswith("_ptr") else "i32"
                         for name in names}
            source = ASTSource(fn=kernel, signature=signature,
                               constexprs={(names.index(name),): value for name, value in constants.items()})
            compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"enable_fp_fusion": True})
            assert compiled.asm["cubin"], (kernel.__name__, k, uniform)
