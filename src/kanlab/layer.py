"""KANLinear: one KAN layer as a drop-in for ``nn.Linear``.

Edge ``i -> j`` computes ``phi_ji(x_i) = mask_ji * (scale_base_ji * b(x_i) + scale_sp_ji * spline_ji(x_i))``
and output ``j`` is ``sum_i phi_ji(x_i)`` (plus an optional bias). Parameters use the
``nn.Linear`` layout, output first: ``coef`` is ``(out, in, G + k)``, ``scale_base``,
``scale_sp`` and the ``mask`` buffer are ``(out, in)``; ``grid`` is an ``(in, G + 2k + 1)``
buffer of knots, one knot vector per input.

Inputs outside an input's knot span get a zero spline part: there the edge is
``scale_base * b(x)`` alone. ``update_grid`` moves the knots to cover the samples it is given.

An edge may instead be symbolic: ``mask * (c * f(a * x + b) + d)`` with ``f`` from the
function library (``set_symbolic``). ``symbolic_mask`` (out, in) marks those edges and
``symbolic_affine`` (out, in, 4) holds their trainable (a, b, c, d). The symbolic branch is
evaluated per library function over all its edges at once, and only when the layer has one.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import gpu, grid_keeping, native, splines
from .functions import SymbolicFunction

__all__ = ["KANLinear", "KANLayer", "resolve_base_fun", "BASE_FUNCTIONS"]


def _zero(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


BASE_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "identity": _identity,
    "zero": _zero,
    "tanh": torch.tanh,
    "gelu": F.gelu,
}
_BASE_ALIASES = {"linear": "identity", "x": "identity", "none": "zero"}


def resolve_base_fun(base_fun: str | Callable | None) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Name and callable of a residual function: a known name, ``None`` (zero) or any callable."""
    if base_fun is None:
        return "zero", _zero
    if isinstance(base_fun, str):
        name = _BASE_ALIASES.get(base_fun.lower(), base_fun.lower())
        if name not in BASE_FUNCTIONS:
            raise ValueError(
                f"base_fun must be one of {sorted(BASE_FUNCTIONS)} or a callable, got {base_fun!r}"
            )
        return name, BASE_FUNCTIONS[name]
    if callable(base_fun):
        return "custom:" + getattr(base_fun, "__name__", type(base_fun).__name__), base_fun
    raise TypeError(f"base_fun must be a name, None or a callable, got {type(base_fun).__name__}")


def _identity_affine(out_features: int, in_features: int, **factory) -> torch.Tensor:
    """``(out, in, 4)`` symbolic parameters (a, b, c, d) = (1, 0, 1, 0)."""
    affine = torch.zeros(out_features, in_features, 4, **factory)
    affine[..., 0] = 1.0
    affine[..., 2] = 1.0
    return affine


def _autocasting(x: torch.Tensor) -> bool:
    """Whether ``torch.autocast`` is on for ``x``'s device."""
    if not isinstance(x, torch.Tensor):
        return False
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if x.device.type == "cpu" else torch.is_autocast_enabled()


def _check_count(value: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class _FeatureWeight(torch.autograd.Function):
    """``KANLinear._feature_weight`` in one pass of the compiled kernel; the backward is plain
    torch (differentiable again). Row ``o``, column ``m * in + i``: ``coef[o, i, m] *
    spline_scale[o, i]``, and ``base_scale[o, i]`` in the residual slot."""

    @staticmethod
    def forward(ctx, coef, spline_scale, base_scale):
        ctx.save_for_backward(coef, spline_scale)
        return native.feature_weight(coef, spline_scale, base_scale)

    @staticmethod
    def backward(ctx, grad):
        coef, spline_scale = ctx.saved_tensors
        n_basis = coef.shape[2]
        slots = grad.reshape(coef.shape[0], -1, coef.shape[1])  # (out, width, in)
        spline = slots[:, :n_basis]
        grad_coef = (spline * spline_scale.unsqueeze(1)).transpose(1, 2) if ctx.needs_input_grad[0] else None
        grad_spline_scale = (spline * coef.transpose(1, 2)).sum(1) if ctx.needs_input_grad[1] else None
        grad_base_scale = slots[:, n_basis] if ctx.needs_input_grad[2] else None
        return grad_coef, grad_spline_scale, grad_base_scale


def _local_product_pays(n_in: int, n_out: int, n_basis: int, edge_norms: bool = False, batch: int = 1024,
                        wide_vectors: bool | None = None, float64: bool = False) -> bool:
    """Whether the compiled local product (``batch * in * (k + 1) * out`` multiply-adds and the
    residual's matrix products) beats the dense features and matrix product (``batch * in * (G +
    k + 1) * out``, at matmul speed) for this layer shape and batch. ``wide_vectors``: whether
    the kernel has AVX-512 (default: what torch reports for this CPU); ``float64``: whether the
    layer runs in float64. Measured on 2 cores (fwd+bwd, float32 and float64, gradients cleared
    between steps):

    - layers of at most 6 inputs and fewer than 16 outputs break even at G = 5 and win from there
      on (0.5x at G = 50);
    - wider layers with at least 16 outputs go by blocks of samples sorted by interval (the
      kernel's ``blocked_product``): with AVX-512, 0.55-0.95x the dense time at G = 5 (and less
      on finer grids) from a batch of 256 on, and on layers of up to 128 x 128 edges from a batch
      of 64; smaller batches on wider layers (1.2-1.4x: the weight's rearrangements then
      outweigh the products) take the last rule. Without AVX-512 (AVX2: half the lanes and half
      the registers, so narrower tiles), in float32 the blocks take 0.88-0.92x the dense time at G
      = 5 on 256 x 256 and 784 x 64 edges (0.65x at a batch of 4096), 0.98x at G = 4 and 1.14x at
      G = 3, so there they wait for 8 bases per input; float64 took 1.11-1.14x at G = 4-5 (0.82x
      at a batch of 4096), so it waits for 9. Layers of up to 128 x 128 edges take them at any
      grid: 0.74-0.9x the dense form at G = 5 (float32, 64 x 64 to 128 x 128 at batches 64-1024;
      two of nine readings, 256 x 128 x 128 and float64 1024 x 64 x 64, 1.07-1.08x);
    - the others, and wide layers that also return the regulariser's norms (entry by entry), from
      about 24 bases per input at up to 64 outputs, and from about 100 at 256 outputs.
    """
    if n_in <= 6 and n_out < 16:
        return True
    if n_in > 6 and n_out >= 16 and not edge_norms and (batch >= 256 or n_in * n_out <= 16384):  # takes_blocks
        if _has_wide_vectors() if wide_vectors is None else wide_vectors:
            return True
        if n_basis >= (9 if float64 else 8) or n_in * n_out <= 16384:
            return True
    return n_basis >= 24 * max(1, n_out // 64)


@functools.lru_cache(maxsize=1)
def _has_wide_vectors() -> bool:
    """Whether this CPU has AVX-512 (torch's dispatch level; the kernel is built for this CPU)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


class _LocalProduct(torch.autograd.Function):
    """The layer's ``(N, out)`` spline and residual output from ``x`` ``(N, in)``, ``base`` and
    ``weight`` ``(in, width, out)`` in one pass of the compiled kernel (``native.local_product``),
    without the ``(N, width * in)`` feature matrix. A backward that builds a graph (second
    derivatives) recomputes through the differentiable feature path instead."""

    @staticmethod
    def forward(ctx, x, base, weight, plan):
        ctx.save_for_backward(x, base, weight)
        ctx.plan = plan
        return native.local_product(x, base, plan, weight)

    @staticmethod
    def backward(ctx, grad):
        x, base, weight = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        if not torch.is_grad_enabled():
            return (*native.local_product_backward(grad, x, base, ctx.plan, weight, needs), None)
        # create_graph: the same gradients written out in differentiable operations. (Not
        # autograd.grad on a recomputed graph: base is a function of x, so that would count the
        # residual's path to x twice.)
        with torch.enable_grad():
            n_basis, n_out = ctx.plan.n_basis, weight.shape[2]
            features = splines.basis_features(x, ctx.plan)  # (N, n_basis * in), slot-major
            spline_weight = weight[:, :n_basis].permute(2, 1, 0).reshape(n_out, -1)  # (out, n_basis * in)
            grad_x = grad_base = grad_weight = None
            if needs[0]:
                (grad_x,) = torch.autograd.grad(F.linear(features, spline_weight), x, grad, create_graph=True)
            if needs[1]:
                grad_base = grad @ weight[:, n_basis].T
            if needs[2]:
                spline_part = (grad.T @ features).view(n_out, n_basis, -1).permute(2, 1, 0)
                grad_weight = spline_part if base is None else torch.cat([spline_part, (grad.T @ base).T.unsqueeze(1)], 1)
        return grad_x, grad_base, grad_weight, None


def _dense_weight(coef: torch.Tensor, spline_scale: torch.Tensor, base_scale: torch.Tensor | None) -> torch.Tensor:
    """Weights ``(out, (G + k [+ 1]) * in)`` matching ``splines.basis_features`` columns (slot-major),
    in differentiable torch operations."""
    weight = spline_scale.unsqueeze(1) * coef.transpose(1, 2)
    if base_scale is not None:
        weight = torch.cat([weight, base_scale.unsqueeze(1)], dim=1)
    return weight.reshape(coef.shape[0], -1)


def _dense_layer(x, coef, scale_sp, scale_base, mask, plan, edge_norms: bool):
    """``_KANLayer``'s torch equivalent (silu residual or none), differentiable: the output and,
    with ``edge_norms``, each edge's ``mean |phi|``."""
    base = F.silu(x) if scale_base is not None else None
    features = splines.basis_features(x, plan, base=base)
    weight = _dense_weight(coef, mask * scale_sp, None if base is None else mask * scale_base)
    out = F.linear(features, weight)
    if not edge_norms:
        return (out,)
    shape = (weight.shape[1] // x.shape[1], x.shape[1])
    return out, splines.edge_mean_abs(features.view(x.shape[0], *shape), weight.view(weight.shape[0], *shape))


class _KANLayer(torch.autograd.Function):
    """A whole layer with the silu residual (or none) in one call of the compiled kernel
    (``native.kan_layer``): the local product with the weight built from ``coef``, ``scale_sp``,
    ``scale_base`` and ``mask`` inside the kernel, so the step has one graph node per layer
    instead of a dozen. With ``edge_norms`` it also returns each edge's ``mean |phi|`` ``(out,
    in)`` for the sparsity regulariser (``native.kan_layer_norms``), so regularised training
    keeps the local form too. A backward that builds a graph (second derivatives) recomputes the
    layer in differentiable torch operations and differentiates that; x enters the recomputation
    once (its silu is computed there), so every path from x to the output is counted once."""

    @staticmethod
    def forward(ctx, x, coef, scale_sp, scale_base, mask, plan, edge_norms):
        ctx.plan, ctx.edge_norms = plan, edge_norms
        if edge_norms:
            out, norms, padded = native.kan_layer_norms(x, plan, coef, scale_sp, scale_base, mask)
        else:
            out, padded = native.kan_layer(x, plan, coef, scale_sp, scale_base, mask)
        # the kernel's padded weight (about coef's size) is kept for the backward pass, which
        # would otherwise rearrange the parameters into it again (an empty tensor on a wide
        # layer's fine grid, where the kernels build the padded rows in cache as they go)
        ctx.save_for_backward(x, coef, scale_sp, scale_base, mask, padded)
        return (out, norms) if edge_norms else out

    @staticmethod
    def backward(ctx, *grads):
        x, coef, scale_sp, scale_base, mask, padded = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:4])
        if not torch.is_grad_enabled():
            parameters = (x, ctx.plan, coef, scale_sp, scale_base, mask, needs, padded)
            if ctx.edge_norms:
                return (*native.kan_layer_norms_backward(*grads, *parameters), None, None, None)
            return (*native.kan_layer_backward(*grads, *parameters), None, None, None)
        wanted = [tensor for tensor, need in zip((x, coef, scale_sp, scale_base), needs) if need]
        with torch.enable_grad():
            outputs = _dense_layer(x, coef, scale_sp, scale_base, mask, ctx.plan, ctx.edge_norms)
            found = iter(torch.autograd.grad(outputs, wanted, grads, create_graph=True))
        return (*(next(found) if need else None for need in needs), None, None, None)


class KANLinear(nn.Module):
    """A KAN layer mapping ``(*, in_features)`` to ``(*, out_features)``.

    Args mirror ``nn.Linear`` (``in_features``, ``out_features``, ``bias``, ``device``,
    ``dtype``) plus the spline's ``grid`` (intervals G), ``k`` (degree), ``grid_range``,
    ``grid_eps`` (uniform share of adaptive grids), ``base_fun`` (residual function: ``"silu"``,
    ``"identity"``, ``"zero"``, ``"tanh"``, ``"gelu"`` or a callable) and the initialisation
    of the paper's reference code: each spline is the least-squares fit of values uniform in
    ``±noise_scale / (2G)`` at the ``G + 1`` grid points, ``scale_base`` =
    ``(scale_base_mu + scale_base_sigma * U(-1, 1)) / sqrt(in)``, ``scale_sp`` =
    ``scale_sp / sqrt(in)``. ``sb_trainable`` / ``sp_trainable`` freeze the scales.
    ``bias`` defaults to False: a KAN node is a plain sum of its edges.

    ``grid_update="auto"``: in training mode the layer keeps its grid over the inputs it sees,
    with no call from the user: running extremes of its inputs, and the knots spread evenly over
    them on training forwards 1, 2, 4, ... up to ``grid_update_until`` (``kanlab.grid_keeping``);
    ``None`` keeps the grid where it is. A ``KAN`` builds its layers with ``None`` (``fit``
    updates its grids itself).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid: int = 5,
        k: int = 3,
        *,
        grid_range: Sequence[float] = (-1.0, 1.0),
        grid_eps: float = 0.02,
        base_fun: str | Callable | None = "silu",
        noise_scale: float = 0.3,
        scale_base_mu: float = 0.0,
        scale_base_sigma: float = 1.0,
        scale_sp: float = 1.0,
        sb_trainable: bool = True,
        sp_trainable: bool = True,
        bias: bool = False,
        grid_update: str | None = "auto",
        grid_update_until: int = grid_keeping.UNTIL,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if grid_update not in ("auto", None):
            raise ValueError(f"grid_update must be 'auto' or None, got {grid_update!r}")
        self.grid_update = grid_update
        self.grid_update_until = _check_count(grid_update_until, "grid_update_until")
        self.in_features = _check_count(in_features, "in_features")
        self.out_features = _check_count(out_features, "out_features")
        self.grid_size = _check_count(grid, "grid")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k (spline degree) must be an integer >= 1, got {k!r}")
        self.k = k
        if not 0.0 <= float(grid_eps) <= 1.0:
            raise ValueError(f"grid_eps must lie in [0, 1], got {grid_eps!r}")
        self.grid_eps = float(grid_eps)
        self.base_fun_name, self.base_fun = resolve_base_fun(base_fun)
        self.noise_scale = float(noise_scale)
        self.scale_base_mu = float(scale_base_mu)
        self.scale_base_sigma = float(scale_base_sigma)
        self.scale_sp_init = float(scale_sp)
        factory = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        n_basis = grid + k
        self.register_buffer("grid", splines.uniform_knots(in_features, grid, k, grid_range, **factory))
        self.register_buffer("mask", torch.ones(out_features, in_features, **factory))
        self.register_buffer("input_min", torch.full((in_features,), float("inf"), **factory))
        self.register_buffer("input_max", torch.full((in_features,), float("-inf"), **factory))
        self.register_buffer("grid_steps", torch.zeros((), dtype=torch.long, device=device))
        self.coef = nn.Parameter(torch.empty(out_features, in_features, n_basis, **factory))
        self.scale_base = nn.Parameter(torch.empty(out_features, in_features, **factory), requires_grad=sb_trainable)
        self.scale_sp = nn.Parameter(torch.empty(out_features, in_features, **factory), requires_grad=sp_trainable)
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.register_buffer("symbolic_mask", torch.zeros(out_features, in_features, **factory))
        self.symbolic_affine = nn.Parameter(_identity_affine(out_features, in_features, **factory))
        self._symbolic: dict[tuple[int, int], SymbolicFunction] = {}
        self._symbolic_groups: list[tuple[SymbolicFunction, torch.Tensor, torch.Tensor]] = []
        self.grid_changed()
        self.reset_parameters(generator)

    # ------------------------------------------------------------------ set-up
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw the initial parameters (class docstring); a CPU ``generator`` makes it reproducible."""

        def uniform(*shape: int) -> torch.Tensor:
            draw = torch.rand(*shape, generator=generator, dtype=torch.float64)
            return draw.to(device=self.coef.device, dtype=self.coef.dtype)

        root = math.sqrt(self.in_features)
        with torch.no_grad():
            points = self.grid[:, self.k : self.grid.shape[1] - self.k].T.contiguous()  # (G + 1, in)
            noise = (uniform(points.shape[0], self.out_features, self.in_features) - 0.5) * self.noise_scale / self.grid_size
            self.coef.copy_(splines.fit_coefficients(points, noise, self.grid, self.k))
            spread = self.scale_base_sigma * (2 * uniform(*self.scale_base.shape) - 1)
            self.scale_base.copy_((self.scale_base_mu + spread) / root)
            self.scale_sp.fill_(self.scale_sp_init / root)
            if self.bias is not None:
                self.bias.zero_()

    def extra_repr(self) -> str:
        text = (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"grid={self.grid_size}, k={self.k}, base_fun={self.base_fun_name}"
        )
        return text + f", bias={self.bias is not None}"

    @property
    def n_basis(self) -> int:
        """Basis functions per input, ``G + k``."""
        return self.grid_size + self.k

    def grid_changed(self) -> None:
        """Rebuild the fast path's knot tables from ``grid``.

        Evenly spaced knots take a closed-form path, any other knots the general one. Runs
        by itself whenever ``grid`` is replaced or modified in place (its version counter
        moves); call it only after writing through ``grid.data``.
        """
        self._plan = splines.plan_knots(self.grid, self.k)
        self._plan_key = (self.grid._version, self.grid.data_ptr(), self.grid.dtype, self.grid.device)

    @property
    def uniform_grid(self) -> bool:
        """Whether the knots are evenly spaced (the closed-form fast path)."""
        return self.plan.uniform

    @property
    def plan(self) -> splines.KnotPlan:
        """The fast path's tables for the current ``grid`` (rebuilt when it changed)."""
        if not torch.compiler.is_compiling():
            key = (self.grid._version, self.grid.data_ptr(), self.grid.dtype, self.grid.device)
            if key != self._plan_key:
                self.grid_changed()
        return self._plan

    # ------------------------------------------------------------------ maths
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have {self.in_features} features in its last dimension, got shape {tuple(x.shape)}"
            )
        if x.dtype != self.coef.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer has {self.coef.dtype}; convert one of them")
        if x.device != self.coef.device:
            raise ValueError(f"x is on {x.device} but the layer is on {self.coef.device}; move one of them")

    def numeric_mask(self) -> torch.Tensor:
        """``(out, in)`` weight of the spline branch: the mask, zero on symbolic edges."""
        return self.mask * (1 - self.symbolic_mask) if self._symbolic else self.mask

    def _feature_weight(self, with_base: bool) -> torch.Tensor:
        """Weights ``(out, (G + k [+ 1]) * in)`` matching ``splines.basis_features`` columns (slot-major)."""
        mask = self.numeric_mask()
        spline_scale = mask * self.scale_sp
        base_scale = mask * self.scale_base if with_base else None
        if native.usable(self.coef, self.k):
            return _FeatureWeight.apply(self.coef, spline_scale, base_scale)
        return _dense_weight(self.coef, spline_scale, base_scale)

    def _local_weight(self, with_base: bool) -> torch.Tensor:
        """Weights ``(in, width, out)`` for ``_LocalProduct``: the feature weight's transpose."""
        mask = self.numeric_mask()
        weight = (mask * self.scale_sp).unsqueeze(-1) * self.coef
        if with_base:
            weight = torch.cat([weight, (mask * self.scale_base).unsqueeze(-1)], dim=-1)
        return weight.permute(1, 2, 0).contiguous()

    def _takes_local_product(self, flat: torch.Tensor, edge_norms: bool = False) -> bool:
        """Whether the compiled local product beats the dense features and matrix product here."""
        if self.k > 5 or not native.usable(flat, self.k):
            return False
        return _local_product_pays(self.in_features, self.out_features, self.n_basis, edge_norms, flat.shape[0],
                                   float64=flat.dtype == torch.float64)

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """B-spline bases ``(*, in, G + k)`` of this layer's knots at ``x`` ``(*, in)``."""
        return splines.bspline_basis(x, self.plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_edge_norms(x, edge_norms=False)[0]

    def forward_with_edge_norms(self, x: torch.Tensor, edge_norms: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output, and (if asked) each edge's numeric-branch ``mean |phi|`` ``(out, in)``.

        The edge norms come from the forward pass's own local values (the fused local layer) or
        basis features (the dense form), so the regulariser costs one more product of the same
        size and never keeps a ``(batch, out, in)`` tensor. Under ``torch.autocast`` the layer runs
        in its own dtype (as autocast runs ``layer_norm`` in float32): a half-precision input from
        an earlier autocast operation is converted, and the output is in the layer's dtype.
        """
        if _autocasting(x):
            if x.is_floating_point() and torch.finfo(x.dtype).bits < torch.finfo(self.coef.dtype).bits:
                x = x.to(self.coef.dtype)
            with torch.autocast(x.device.type, enabled=False):
                return self.forward_with_edge_norms(x, edge_norms)
        self._check_input(x)
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        if self.grid_update == "auto" and self.training and torch.is_grad_enabled() and native.eager():
            grid_keeping.observe(self, flat)
        if len(self._symbolic) == self.out_features * self.in_features:
            # every edge symbolic: the spline branch is masked out on all of them, so it is skipped
            out = self._symbolic_output(flat)
            if self.bias is not None:
                out = out + self.bias
            norms = flat.new_zeros(self.out_features, self.in_features) if edge_norms else None
            return out.reshape(*lead, self.out_features), norms
        with_base = self.base_fun_name != "zero"
        if not edge_norms and gpu.takes(flat, self.k):  # CUDA: the Triton kernels (kanlab.gpu)
            out = gpu.spline_product(flat, self._local_weight(with_base=False), self.plan)
            if with_base:
                out = out + F.linear(self.base_fun(flat), self.numeric_mask() * self.scale_base)
            return self._finish(out, flat, lead), None
        fused = self.base_fun_name in ("silu", "zero")
        if (fused or not edge_norms) and self._takes_local_product(flat, edge_norms):
            norms = None
            if fused:
                scale_base = self.scale_base if with_base else None
                result = _KANLayer.apply(flat, self.coef, self.scale_sp, scale_base, self.numeric_mask(), self.plan,
                                         edge_norms)
                out, norms = result if edge_norms else (result, None)
            else:
                base = self.base_fun(flat)
                out = _LocalProduct.apply(flat, base, self._local_weight(with_base), self.plan)
            return self._finish(out, flat, lead), norms
        base = self.base_fun(flat) if with_base else None
        features = splines.basis_features(flat, self.plan, base=base)
        weight = self._feature_weight(with_base)
        out = F.linear(features, weight, self.bias)
        if self._symbolic_groups:
            out = out + self._symbolic_output(flat)
        norms = None
        if edge_norms:
            shape = (weight.shape[1] // self.in_features, self.in_features)
            norms = splines.edge_mean_abs(features.view(flat.shape[0], *shape), weight.view(self.out_features, *shape))
        return out.reshape(*lead, self.out_features), norms

    def _finish(self, out: torch.Tensor, flat: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """The numeric branch's ``out`` ``(N, out)`` plus the bias and the symbolic edges, reshaped to ``lead``."""
        if self.bias is not None:
            out = out + self.bias
        if self._symbolic_groups:
            out = out + self._symbolic_output(flat)
        return out.reshape(*lead, self.out_features)

    def _symbolic_terms(self, flat: torch.Tensor):
        """Per library function: its edges' rows, columns and values ``(batch, n_edges)``."""
        for function, rows, cols in self._symbolic_groups:
            a, b, c, d = self.symbolic_affine[rows, cols].unbind(-1)
            values = c * function.torch(flat[:, cols] * a + b) + d
            yield rows, cols, values * self.mask[rows, cols]

    def _symbolic_output(self, flat: torch.Tensor) -> torch.Tensor:
        """Sum of the symbolic edges into each output, ``(batch, out)``."""
        out = flat.new_zeros(flat.shape[0], self.out_features)
        for rows, _, values in self._symbolic_terms(flat):
            out = out.index_add(1, rows, values)
        return out

    def edge_activations(self, x: torch.Tensor, part: str = "all") -> torch.Tensor:
        """Per-edge values ``phi_ji(x_i)`` as ``(batch, out, in)``, for inspection and plots.

        ``part="numeric"`` gives the spline branch only (zero on symbolic edges), which is
        what the regulariser penalises; ``"all"`` adds the symbolic edges.
        """
        self._check_input(x)
        if x.dim() != 2:
            raise ValueError(f"x must be 2-D (batch, in), got shape {tuple(x.shape)}")
        if part not in ("all", "numeric"):
            raise ValueError(f"part must be 'all' or 'numeric', got {part!r}")
        spline = torch.einsum("bim,oim->boi", self.basis(x), self.coef)
        residual = self.base_fun(x).unsqueeze(1)
        values = self.numeric_mask() * (self.scale_base * residual + self.scale_sp * spline)
        if part == "all" and self._symbolic_groups:
            symbolic = values.new_zeros(self.out_features, self.in_features, x.shape[0])
            for rows, cols, terms in self._symbolic_terms(x):
                symbolic = symbolic.index_put((rows, cols), terms.T)
            values = values + symbolic.permute(2, 0, 1)
        return values

    # ------------------------------------------------------------------ symbolic edges
    def symbolic_function(self, j: int, i: int) -> SymbolicFunction | None:
        """The library function of edge ``i -> j``, or None for a spline edge."""
        return self._symbolic.get((j, i))

    @property
    def symbolic_edges(self) -> dict[tuple[int, int], SymbolicFunction]:
        """``{(out, in): function}`` for every symbolic edge (a copy)."""
        return dict(self._symbolic)

    @torch.no_grad()
    def set_symbolic(self, j: int, i: int, function: SymbolicFunction, params: Sequence[float] = (1.0, 0.0, 1.0, 0.0)) -> None:
        """Make edge ``i -> j`` compute ``c * function(a * x + b) + d`` with ``params = (a, b, c, d)``."""
        self._check_edge(j, i)
        if not isinstance(function, SymbolicFunction):
            raise TypeError(f"function must be a SymbolicFunction, got {type(function).__name__}")
        if len(params) != 4:
            raise ValueError(f"params must be (a, b, c, d), got {params!r}")
        self._symbolic[(j, i)] = function
        self.symbolic_mask[j, i] = 1.0
        self.symbolic_affine[j, i] = torch.as_tensor([float(p) for p in params], dtype=self.coef.dtype)
        self._regroup()

    @torch.no_grad()
    def clear_symbolic(self, j: int, i: int) -> None:
        """Return edge ``i -> j`` to its spline (which was kept while it was symbolic)."""
        self._check_edge(j, i)
        self._symbolic.pop((j, i), None)
        self.symbolic_mask[j, i] = 0.0
        self.symbolic_affine[j, i] = torch.as_tensor([1.0, 0.0, 1.0, 0.0], dtype=self.coef.dtype)
        self._regroup()

    def _check_edge(self, j: int, i: int) -> None:
        if not (0 <= j < self.out_features and 0 <= i < self.in_features):
            raise IndexError(
                f"edge (out={j}, in={i}) is outside this layer's {self.out_features} x {self.in_features} edges"
            )

    def _regroup(self) -> None:
        """Index the symbolic edges by function, for the vectorised symbolic branch."""
        groups: dict[int, tuple[SymbolicFunction, list[int], list[int]]] = {}
        for (j, i), function in sorted(self._symbolic.items()):
            entry = groups.setdefault(id(function), (function, [], []))
            entry[1].append(j)
            entry[2].append(i)
        device = self.coef.device
        self._symbolic_groups = [
            (function, torch.tensor(rows, device=device), torch.tensor(cols, device=device))
            for function, rows, cols in groups.values()
        ]

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self._regroup()  # index tensors follow the module's device
        return result

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # files from before symbolic edges (or grid keeping) existed lack their state: keep the defaults
        for name in ("symbolic_mask", "symbolic_affine", "input_min", "input_max", "grid_steps"):
            if prefix + name not in state_dict:
                state_dict[prefix + name] = getattr(self, name).detach().clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.__dict__.pop("_grid_steps_seen", None)  # grid keeping reads the loaded count again

    def edge_mean_abs(self, x: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
        """Per-edge ``mean_batch |phi_ji(x_i)|`` ``(out, in)`` of the spline branch: the regulariser's L1 norm.

        Computed over batch chunks, each under activation checkpointing when gradients are
        needed, so no ``(batch, out, in)`` tensor is kept alive until the backward pass.
        """
        total = x.new_zeros(self.out_features, self.in_features)
        needs_graph = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        for chunk in torch.split(x, chunk_size):
            if needs_graph:
                part = checkpoint(self._chunk_abs_sum, chunk, use_reentrant=False)
            else:
                part = self._chunk_abs_sum(chunk)
            total = total + part
        return total / x.shape[0]

    def _chunk_abs_sum(self, chunk: torch.Tensor) -> torch.Tensor:
        return self.edge_activations(chunk, part="numeric").abs().sum(0)

    # ------------------------------------------------------------------ grids
    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, grid_eps: float | None = None) -> None:
        """Move the knots to the samples ``x`` ``(batch, in)`` and refit, keeping each edge's function.

        Knots become ``grid_eps * uniform + (1 - grid_eps) * quantiles`` (``grid_eps``: the
        layer's unless given) of each input's
        samples, with the ends one mean sample gap beyond them (``knots_from_samples``), so
        the grid covers them all; the coefficients are refit by least squares to
        the spline's old values on the samples (and evenly between them), so every edge
        computes (nearly) the same function there as before. Samples that lay outside the old
        knot span had a zero spline part, and keep it.
        """
        self._check_input(x)
        samples = x.reshape(-1, self.in_features)
        eps = self.grid_eps if grid_eps is None else grid_eps
        new_knots = splines.knots_from_samples(samples, self.grid_size, self.k, eps)
        new_coef = splines.refit_spline(self.plan, self.coef, self.k, new_knots, samples)
        self.grid.copy_(new_knots)  # the layer's knot tables follow (see grid_changed)
        self.coef.copy_(new_coef)

    @torch.no_grad()
    def refined(self, grid: int, x: torch.Tensor | None = None) -> "KANLinear":
        """A copy with ``grid`` intervals whose edges compute the same functions.

        When ``grid`` is a multiple of the current one and the samples lie within the finer
        knots, every interval is split evenly (knot insertion), so each edge is kept exactly on
        the grid's interior range. Otherwise the new knots adapt to the samples ``x`` (as
        ``update_grid``) or, without samples, are uniform over each input's current interior
        range. Coefficients are fit by least squares on ``x`` and evenly spaced points.
        """
        _check_count(grid, "grid")
        flat = None
        if x is not None:
            self._check_input(x)
            flat = x.reshape(-1, self.in_features)
        new_knots = self._finer_knots(grid, flat)
        new = copy.deepcopy(self)
        new.grid_size = grid
        new.coef = nn.Parameter(
            splines.refit_spline(self.plan, self.coef, self.k, new_knots, flat),
            requires_grad=self.coef.requires_grad,
        )
        new.grid = new_knots
        return new

    @torch.no_grad()
    def sliced(self, rows: Sequence[int], cols: Sequence[int]) -> "KANLinear":
        """A copy keeping outputs ``rows`` and inputs ``cols`` (in that order), edges unchanged."""
        rows_t = torch.as_tensor(list(rows), dtype=torch.long, device=self.coef.device)
        cols_t = torch.as_tensor(list(cols), dtype=torch.long, device=self.coef.device)
        if len(rows_t) == 0 or len(cols_t) == 0:
            raise ValueError("a layer needs at least one input and one output; cannot slice to none")
        new = copy.deepcopy(self)
        new.in_features, new.out_features = len(cols_t), len(rows_t)
        for name in ("coef", "scale_base", "scale_sp", "symbolic_affine"):
            old = getattr(self, name)
            setattr(new, name, nn.Parameter(old[rows_t][:, cols_t].clone(), requires_grad=old.requires_grad))
        if self.bias is not None:
            new.bias = nn.Parameter(self.bias[rows_t].clone(), requires_grad=self.bias.requires_grad)
        new.mask = self.mask[rows_t][:, cols_t].clone()
        new.symbolic_mask = self.symbolic_mask[rows_t][:, cols_t].clone()
        new.grid = self.grid[cols_t].clone()
        new.input_min, new.input_max = self.input_min[cols_t].clone(), self.input_max[cols_t].clone()
        row_of = {int(r): n for n, r in enumerate(rows_t)}
        col_of = {int(c): n for n, c in enumerate(cols_t)}
        new._symbolic = {
            (row_of[j], col_of[i]): function
            for (j, i), function in self._symbolic.items()
            if j in row_of and i in col_of
        }
        new._regroup()
        new.grid_changed()
        return new

    def _finer_knots(self, grid: int, samples: torch.Tensor | None) -> torch.Tensor:
        if grid % self.grid_size == 0:
            inserted = splines.subdivide_knots(self.grid, self.k, grid // self.grid_size)
            if samples is None or not ((samples < inserted[:, 0]) | (samples >= inserted[:, -1])).any():
                return inserted
        if samples is not None:
            return splines.knots_from_samples(samples, grid, self.k, self.grid_eps)
        low, high = splines.knot_span(self.grid, self.k)
        return splines.knots_between(low, high, grid, self.k)


KANLayer = KANLinear
