"""A whole KAN's numeric forward and backward as one graph node of the compiled kernel.

A small KAN's training step is mostly fixed costs: per layer, a Python ``autograd.Function``
call and its node in the autograd engine, around kernel calls of tens of microseconds. When
every layer takes the compiled fused layer (``layer._KANLayer``: the kernel loaded, silu or no
residual, no bias, no symbolic edges, no multiplication nodes, the local product paying), the
whole network runs as one ``_FusedNetwork`` node instead: the same kernel calls in the same
order, on the same arguments, so outputs, edge norms and gradients are those of the per-layer
path to the last bit. A backward pass that builds a graph (second derivatives) recomputes the
network in differentiable torch operations and differentiates that, as ``_KANLayer`` does.

``fit`` goes one step further for its default objective (squared error plus the L1 and entropy
terms): ``squared_error_step`` runs the same kernels and writes the gradients into the
parameters itself, with no graph at all, to the same bits as autograd through the fused node.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from . import layer as layer_module
from . import native
from .layer import KANLinear, _dense_layer
from .sparsity import sparsity_and_gradients

__all__ = ["fusable", "fused_forward", "squared_error_step", "SquaredErrorObjective"]


def fusable(layers: Sequence[KANLinear], x: torch.Tensor, edge_norms: bool) -> bool:
    """Whether every layer of a network without multiplication nodes takes the compiled fused
    layer on ``x`` ``(batch, in)`` (its own inputs have the same batch), with no module hooks
    that a per-layer call would run."""
    if not native.usable(x, layers[0].k):
        return False
    batch = x.shape[0]
    for layer in layers:
        if (layer.base_fun_name not in ("silu", "zero") or layer.bias is not None or layer._symbolic_groups
                or layer.k > 5 or layer.coef.dtype != x.dtype or layer._forward_hooks or layer._forward_pre_hooks):
            return False
        if not layer_module._local_product_pays(layer.in_features, layer.out_features, layer.n_basis, edge_norms, batch,
                                                float64=x.dtype == torch.float64):
            return False
    return True


def fused_forward(layers: Sequence[KANLinear], x: torch.Tensor,
                  edge_norms: bool) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The network's output ``(batch, out)`` and, with ``edge_norms``, every layer's per-edge
    ``mean |phi|`` ``(out_l, in_l)``, for layers that are ``fusable`` on ``x``."""
    plans, masks, parameters = _arguments(layers)
    result = _FusedNetwork.apply(x, plans, masks, edge_norms, *parameters)
    if not edge_norms:
        return result, None
    return result[0], list(result[1:])


def squared_error_step(model, x: torch.Tensor, y: torch.Tensor, lamb: float, lamb_l1: float,
                       lamb_entropy: float, scale: float) -> torch.Tensor:
    """``fit``'s objective ``scale * (mean((model(x) - y)^2) + lamb * sparsity)`` (a 0-d tensor)
    with its gradient written into every trainable layer parameter's ``.grad``, for a model
    whose layers are ``fusable`` on ``x`` (``KAN._fuses``): the kernels' forward and backward
    passes and the loss's and regulariser's gradients written out, with no autograd graph
    (whose engine and nodes cost more than the arithmetic for a small KAN). ``sparsity`` is
    the L1 and entropy terms of the edge norms (``sparsity.sparsity_and_gradients``)."""
    return SquaredErrorObjective(model, x, y, lamb, lamb_l1, lamb_entropy, scale)()


class SquaredErrorObjective:
    """``squared_error_step`` on one batch, its arguments gathered once: each call is one
    evaluation. An L-BFGS step evaluates the same batch some 20 times while only the parameters'
    values change, so ``fit`` builds one per step (the layers' knot plans and masks, the
    parameter list and the inputs the first layer reads are the same for all of them)."""

    def __init__(self, model, x: torch.Tensor, y: torch.Tensor, lamb: float, lamb_l1: float, lamb_entropy: float,
                 scale: float) -> None:
        # the scalars in the parameters' precision, rounded as autograd's tensor-scalar products round them
        real = np.float32 if x.dtype == torch.float32 else np.float64
        self.plans, self.masks, self.parameters = _arguments(model.layers)
        self.needs = [p is not None and p.requires_grad for p in self.parameters]
        self.x, self.y = model._select_inputs(x), y
        self.lamb, self.lamb_l1, self.lamb_entropy, self.scale = lamb, lamb_l1, lamb_entropy, scale
        self.with_norms = bool(lamb and (lamb_l1 or lamb_entropy))
        self.norm_weight = float(real(scale) * real(lamb))
        self.real = real

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        """The objective (0-d), its gradient added into each trainable parameter's ``.grad``."""
        out, norms, inputs, padded = _network_forward(self.x, self.plans, self.masks, self.parameters, self.with_norms)
        residual = out - self.y
        total = torch.mean(residual**2)
        grad_norms = None
        if self.with_norms:
            sparsity, grad_norms = sparsity_and_gradients(norms, self.lamb_l1, self.lamb_entropy)
            grad_norms = [gradient.mul_(self.norm_weight) for gradient in grad_norms]
            total = total + self.lamb * sparsity
        # d mean(r^2) / d out = 2 r / N, times the objective's scale, as autograd forms it
        grad = (2.0 * residual).mul_(float(self.real(self.scale) / self.real(residual.numel())))
        _, grads = _network_backward(grad, grad_norms, inputs, padded, self.plans, self.masks, self.parameters, False,
                                     self.needs)
        for parameter, gradient in zip(self.parameters, grads):
            if gradient is not None:
                parameter.grad = gradient if parameter.grad is None else parameter.grad.add_(gradient)
        return total * self.scale


def _arguments(layers: Sequence[KANLinear]) -> tuple[tuple, tuple, list]:
    """Each layer's knot plan and mask, and its ``coef``, ``scale_sp`` and ``scale_base`` (None:
    no residual) in one flat list."""
    plans = tuple(layer.plan for layer in layers)
    masks = tuple(layer.mask for layer in layers)  # no symbolic edges: the numeric mask
    parameters = []
    for layer in layers:
        parameters += [layer.coef, layer.scale_sp, layer.scale_base if layer.base_fun_name == "silu" else None]
    return plans, masks, parameters


def _network_forward(x, plans, masks, parameters, edge_norms: bool):
    """Output, edge norms (empty without ``edge_norms``), and what the backward pass needs: each
    layer's input and the padded weight its kernel built."""
    inputs, padded, norms = [], [], []
    h = x
    for l, (plan, mask) in enumerate(zip(plans, masks)):
        coef, scale_sp, scale_base = parameters[3 * l : 3 * l + 3]
        inputs.append(h)
        if edge_norms:
            h, layer_norms, layer_padded = native.kan_layer_norms(h, plan, coef, scale_sp, scale_base, mask)
            norms.append(layer_norms)
        else:
            h, layer_padded = native.kan_layer(h, plan, coef, scale_sp, scale_base, mask)
        padded.append(layer_padded)
    return h, norms, inputs, padded


def _network_backward(grad, grad_norms, inputs, padded, plans, masks, parameters, need_x: bool,
                      need_parameters: Sequence[bool]) -> tuple[torch.Tensor | None, list]:
    """The input's gradient (None unless ``need_x``) and every parameter's (None where not
    needed), from the output's gradient and (None: no edge norms) the norms' gradients."""
    parameter_grads = [None] * len(parameters)
    for l in reversed(range(len(plans))):
        coef, scale_sp, scale_base = parameters[3 * l : 3 * l + 3]
        needs = (l > 0 or need_x, *need_parameters[3 * l : 3 * l + 3])
        arguments = (inputs[l], plans[l], coef, scale_sp, scale_base, masks[l], needs, padded[l])
        if grad_norms is not None:
            grad, *layer_grads = native.kan_layer_norms_backward(grad, grad_norms[l], *arguments)
        else:
            grad, *layer_grads = native.kan_layer_backward(grad, *arguments)
        parameter_grads[3 * l : 3 * l + 3] = layer_grads
    return grad, parameter_grads


class _FusedNetwork(torch.autograd.Function):
    """Layer after layer of ``native.kan_layer`` (``kan_layer_norms`` with ``edge_norms``), and
    their backward kernels in reverse; ``parameters`` holds each layer's ``coef``, ``scale_sp``
    and ``scale_base`` (None: no residual)."""

    @staticmethod
    def forward(ctx, x, plans, masks, edge_norms, *parameters):
        out, norms, inputs, padded = _network_forward(x, plans, masks, parameters, edge_norms)
        ctx.plans, ctx.edge_norms = plans, edge_norms
        ctx.save_for_backward(*inputs, *padded, *masks, *parameters)
        return (out, *norms) if edge_norms else out

    @staticmethod
    def backward(ctx, grad, *grad_norms):
        n_layers = len(ctx.plans)
        saved = ctx.saved_tensors
        inputs, padded = saved[:n_layers], saved[n_layers : 2 * n_layers]
        masks, parameters = saved[2 * n_layers : 3 * n_layers], saved[3 * n_layers :]
        if torch.is_grad_enabled():
            return _FusedNetwork._backward_with_graph(ctx, inputs[0], masks, parameters, grad, grad_norms)
        grad_x, parameter_grads = _network_backward(
            grad, grad_norms if ctx.edge_norms else None, inputs, padded, ctx.plans, masks, parameters,
            ctx.needs_input_grad[0], ctx.needs_input_grad[4:])
        return (grad_x, None, None, None, *parameter_grads)

    @staticmethod
    def _backward_with_graph(ctx, x, masks, parameters, grad, grad_norms):
        """The gradients as differentiable functions (``create_graph=True``): the network again
        in torch operations, differentiated by autograd."""
        wanted_flags = ctx.needs_input_grad[:1] + ctx.needs_input_grad[4:]
        candidates = (x, *parameters)
        wanted = [tensor for tensor, need in zip(candidates, wanted_flags) if need]
        with torch.enable_grad():
            h, outputs = x, []
            for l, (plan, mask) in enumerate(zip(ctx.plans, masks)):
                coef, scale_sp, scale_base = parameters[3 * l : 3 * l + 3]
                result = _dense_layer(h, coef, scale_sp, scale_base, mask, plan, ctx.edge_norms)
                h = result[0]
                outputs += result[1:]
            found = iter(torch.autograd.grad([h, *outputs], wanted, [grad, *grad_norms], create_graph=True,
                                             allow_unused=True))
        grads = [next(found) if need else None for need in wanted_flags]
        return (grads[0], None, None, None, *grads[1:])
