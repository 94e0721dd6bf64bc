"""The layer's spline part on CUDA in the local form: Triton kernels, no basis tensor.

On a CUDA device with Triton installed (it comes with torch's CUDA wheels), a ``KANLinear`` in
float32 computes its spline part with the kernels of ``_triton_kernels``: each entry's ``k + 1``
bases are computed in registers and multiplied into the output, so the work is ``N * in * (k +
1) * out`` multiply-adds and the memory is that of ``x`` and the output, whatever the grid (the
dense form stores ``N * in * (G + k)`` bases and does ``G + k`` multiply-adds per entry and
output). The silu residual is one matrix product (cuBLAS) beside it. Under ``torch.autocast`` a
float32 layer still runs in float32 (``KANLinear.forward_with_edge_norms``), so on the kernels.
Under ``torch.compile``, tracing, export and ``torch.func``, for float64 or half-precision layers,
or without Triton, layers take the dense torch path; a backward pass that builds a graph (second
derivatives) recomputes through it.

``spline_product(x, weight, plan)`` is the autograd function. With ``TRITON_INTERPRET=1`` in the
environment (set before anything imports Triton), the kernels run in Triton's interpreter and take
CPU float32 tensors too, in layers as well: that is how the tests check them without a GPU.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import torch

from . import native, splines

__all__ = ["available", "interpreting", "takes", "spline_product"]

logger = logging.getLogger(__name__)

#: the largest degree the kernels take (their loops over the k + 1 bases are unrolled)
MAX_DEGREE = 5
_state = {"failed": False}  # a kernel failed to compile or launch: the dense path from then on
_BLOCK_N, _BLOCK_O, _WINDOW = 32, 64, 16


@functools.lru_cache(maxsize=1)
def _kernels():
    """The kernel module (imports Triton; compiles each kernel on its first call per shape)."""
    from . import _triton_kernels

    return _triton_kernels


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether Triton can be imported (looked at once)."""
    try:
        import triton  # noqa: F401
    except Exception as error:  # ImportError, or a broken install
        logger.info("Triton is not available (%s); CUDA layers take the dense torch path", error)
        return False
    return True


def interpreting() -> bool:
    """Whether Triton runs its interpreter (``TRITON_INTERPRET=1``): the kernels then take CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def takes(x: torch.Tensor, k: int) -> bool:
    """Whether ``x`` ``(N, in)`` goes through the kernels: a non-empty float32 CUDA tensor (a CPU one
    under ``TRITON_INTERPRET=1``), eager mode, ``k <= MAX_DEGREE``, Triton importable."""
    if not (x.is_cuda or (x.is_cpu and interpreting())):
        return False
    return (x.dtype == torch.float32 and x.shape[0] > 0 and k <= MAX_DEGREE and not _state["failed"]
            and native.eager() and available())


def _plan_arguments(plan: splines.KnotPlan):
    """Pointers and sizes the kernels read a knot plan through: ``start``, ``step``, ``knots``,
    the value and derivative tables (cardinal matrices on evenly spaced knots) and their row
    lengths, and the bisection depth."""
    n_knots = plan.knots.shape[1]
    dtype = torch.float32
    if plan.uniform:
        values = plan.cardinal.to(dtype).contiguous()
        derivative = plan.cardinal_derivative.to(dtype).contiguous()
    else:
        values = plan.value_table.to(dtype).contiguous()
        derivative = plan.derivative_table.to(dtype).contiguous()
    return dict(start=plan.start.to(dtype).contiguous(), step=plan.step.to(dtype).contiguous(),
                knots=plan.knots.to(dtype).contiguous(), values=values, derivative=derivative,
                n_knots=n_knots, row_len=values.shape[1], drow_len=derivative.shape[1],
                search=max(1, math.ceil(math.log2(n_knots + 1))))


def _forward(x: torch.Tensor, weight: torch.Tensor, plan: splines.KnotPlan) -> torch.Tensor:
    n, n_in = x.shape
    n_basis, n_out = weight.shape[1], weight.shape[2]
    p = _plan_arguments(plan)
    out = torch.empty(n, n_out, dtype=x.dtype, device=x.device)
    grid = (_cdiv(n, _BLOCK_N), _cdiv(n_out, _BLOCK_O))
    _kernels().spline_forward[grid](
        x, weight, out, p["start"], p["step"], p["knots"], p["values"], p["values"],
        n, n_in, n_out, p["n_knots"], n_basis, p["row_len"],
        K=plan.k, UNIFORM=plan.uniform, SEARCH=p["search"], BLOCK_N=_BLOCK_N, BLOCK_O=_BLOCK_O,
        enable_fp_fusion=True)
    return out


def _grad_x(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, plan: splines.KnotPlan) -> torch.Tensor:
    n, n_in = x.shape
    n_basis, n_out = weight.shape[1], weight.shape[2]
    p = _plan_arguments(plan)
    dx = torch.empty_like(x)
    grid = (_cdiv(n, _BLOCK_N), n_in)
    _kernels().spline_grad_x[grid](
        x, weight, grad, dx, p["start"], p["step"], p["knots"], p["values"], p["derivative"],
        n, n_in, n_out, p["n_knots"], n_basis, p["row_len"], p["drow_len"],
        K=plan.k, UNIFORM=plan.uniform, SEARCH=p["search"], BLOCK_N=_BLOCK_N, BLOCK_O=_BLOCK_O,
        enable_fp_fusion=True)
    return dx


def _grad_w(grad: torch.Tensor, x: torch.Tensor, n_basis: int, plan: splines.KnotPlan) -> torch.Tensor:
    n, n_in = x.shape
    n_out = grad.shape[1]
    p = _plan_arguments(plan)
    order = torch.argsort(x.T, dim=1).to(torch.int32).contiguous()  # each input's samples by value
    dw = torch.zeros(n_in, n_basis, n_out, dtype=x.dtype, device=x.device)
    grid = (n_in, _cdiv(n_out, _BLOCK_O))
    _kernels().spline_grad_w[grid](
        x, order, grad, dw, p["start"], p["step"], p["knots"], p["values"],
        n, n_in, n_out, p["n_knots"], n_basis, p["row_len"],
        K=plan.k, UNIFORM=plan.uniform, SEARCH=p["search"], BLOCK_N=_BLOCK_N, BLOCK_O=_BLOCK_O,
        WINDOW=_WINDOW, IEEE=not torch.backends.cuda.matmul.allow_tf32, enable_fp_fusion=True)
    return dw


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _dense(x: torch.Tensor, weight: torch.Tensor, plan: splines.KnotPlan) -> torch.Tensor:
    """The same product on the dense torch path (basis features, one matrix product)."""
    features = splines.basis_features(x, plan)  # (N, n_basis * in), slot-major
    return features @ weight.permute(2, 1, 0).reshape(weight.shape[2], -1).T


def _failed(error: Exception) -> bool:
    """Whether ``error`` came from Triton (compiling or launching a kernel); if so, the kernels
    are off for the rest of the process and the dense path answers instead, with one warning."""
    if not type(error).__module__.startswith("triton"):
        return False
    _state["failed"] = True
    logger.warning("kanlab's Triton kernels failed (%s: %s); CUDA layers take the dense torch path from now on",
                   type(error).__name__, error)
    return True


class _SplineProduct(torch.autograd.Function):
    """``(N, out)`` spline part of ``x`` ``(N, in)`` with weight ``(in, G + k, out)``."""

    @staticmethod
    def forward(ctx, x, weight, plan):
        x, weight = x.contiguous(), weight.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.plan = plan
        try:
            return _forward(x, weight, plan)
        except Exception as error:
            if not _failed(error):
                raise
            return _dense(x, weight, plan)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        plan = ctx.plan
        need_x, need_w = ctx.needs_input_grad[:2]
        create_graph = torch.is_grad_enabled()  # second derivatives: differentiate the dense form
        if not create_graph and not _state["failed"]:
            grad = grad.contiguous()
            try:
                dx = _grad_x(grad, x, weight, plan) if need_x else None
                dw = _grad_w(grad, x, weight.shape[1], plan) if need_w else None
                return dx, dw, None
            except Exception as error:
                if not _failed(error):
                    raise
        if not create_graph:
            x, weight = x.detach().requires_grad_(need_x), weight.detach().requires_grad_(need_w)
        with torch.enable_grad():
            wanted = [tensor for tensor, need in ((x, need_x), (weight, need_w)) if need]
            found = iter(torch.autograd.grad(_dense(x, weight, plan), wanted, grad, create_graph=create_graph))
        return (next(found) if need_x else None), (next(found) if need_w else None), None


def spline_product(x: torch.Tensor, weight: torch.Tensor, plan: splines.KnotPlan) -> torch.Tensor:
    """``out[n, o] = sum_i phi_io(x[n, i])`` for ``x`` ``(N, in)`` (float32) and the spline weights
    ``weight`` ``(in, G + k, out)`` (``weight[i, m, o]``: coefficient of basis ``m`` on edge
    ``i -> o``), on ``plan``'s knots; differentiable in ``x`` and ``weight``."""
    if x.dim() != 2 or weight.dim() != 3 or weight.shape[0] != x.shape[1] or weight.shape[1] != plan.n_basis:
        raise ValueError(f"x must be (N, in) and weight (in, {plan.n_basis}, out); got {tuple(x.shape)} "
                         f"and {tuple(weight.shape)}")
    if x.dtype != torch.float32 or weight.dtype != torch.float32:
        raise TypeError(f"x and weight must be float32, got {x.dtype} and {weight.dtype}")
    if plan.k > MAX_DEGREE:
        raise ValueError(f"the kernels take k <= {MAX_DEGREE}, got k = {plan.k}")
    if max(x.numel(), x.shape[0] * weight.shape[2], weight.numel()) >= 2**31:
        return _dense(x, weight, plan)  # the kernels index in 32 bits
    return _SplineProduct.apply(x, weight, plan)
