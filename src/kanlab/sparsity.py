"""The paper's sparsity terms of one layer's edge norms, with their gradient written out.

For a layer's per-edge norms ``n`` ``(out, in)`` (each edge's batch mean of ``|phi|``), the
regulariser adds ``lamb_l1 * sum n + lamb_entropy * S`` with ``S = -sum p log p`` the entropy
of the shares ``p = n / sum n`` (paper, section 2.5). ``fit`` evaluates these on tiny tensors
once per function evaluation, so they are one graph node (``EdgeSparsity``) or, on the
compiled path, no graph at all (``fused.squared_error_step``); on the CPU their arithmetic is
numpy's, whose calls on arrays of a few dozen numbers cost a fraction of torch's dispatch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.autograd.function import once_differentiable

__all__ = ["ENTROPY_FLOOR", "edge_sparsity", "sparsity_and_gradients", "EdgeSparsity"]

ENTROPY_FLOOR = 1e-12  # shares below it count as this in log p (and sum n gets it added: no 0 / 0)


def edge_sparsity(norms: torch.Tensor, lamb_l1: float, lamb_entropy: float,
                  total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``total`` plus one layer's L1 and entropy terms from its edge norms ``(out, in)``, and
    the gradient of those terms for the norms ``(out, in)``, written out."""
    layer_norm = norms.sum()
    if lamb_l1:
        total = total + lamb_l1 * layer_norm
    if not lamb_entropy:
        return total, torch.full_like(norms, lamb_l1)
    denominator = layer_norm + ENTROPY_FLOOR
    share = norms / denominator
    log_share = torch.log(share.clamp_min(ENTROPY_FLOOR))
    total = total - lamb_entropy * (share * log_share).sum()
    # S = -sum p log(max(p, floor)): dS/dp = -(log(max(p, floor)) + [p >= floor]), and
    # p = n / (sum n + floor) turns that into dS/dn = (dS/dp - sum p dS/dp) / (sum n + floor)
    by_share = -(log_share + (share >= ENTROPY_FLOOR).to(share.dtype))
    by_norm = (by_share - (by_share * share).sum()) / denominator
    return total, by_norm * lamb_entropy + lamb_l1


def sparsity_and_gradients(norms: Sequence[torch.Tensor], lamb_l1: float,
                           lamb_entropy: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The L1 and entropy terms summed over the layers (0-d) and their gradient for each
    layer's norms ``(out, in)``: ``edge_sparsity``'s arithmetic, in numpy for float32 and
    float64 CPU tensors."""
    on_host = all(n.is_cpu and n.dtype in (torch.float32, torch.float64) for n in norms)
    if on_host and not torch.compiler.is_compiling():
        return _sparsity_on_host(norms, lamb_l1, lamb_entropy)
    total, gradients = norms[0].new_zeros(()), []
    for layer_norms in norms:
        total, gradient = edge_sparsity(layer_norms, lamb_l1, lamb_entropy, total)
        gradients.append(gradient)
    return total, gradients


def _sparsity_on_host(norms: Sequence[torch.Tensor], lamb_l1: float,
                      lamb_entropy: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``sparsity_and_gradients`` for CPU tensors, in numpy in the tensors' precision."""
    real = np.dtype(str(norms[0].dtype).removeprefix("torch.")).type
    total, l1, entropy, floor = real(0), real(lamb_l1), real(lamb_entropy), real(ENTROPY_FLOOR)
    gradients = []
    for layer_norms in norms:
        values = layer_norms.detach().numpy()
        layer_norm = values.sum(dtype=values.dtype)
        if lamb_l1:
            total = total + l1 * layer_norm
        if not lamb_entropy:
            gradients.append(torch.full_like(layer_norms, lamb_l1))
            continue
        denominator = layer_norm + floor
        share = values / denominator
        log_share = np.log(np.maximum(share, floor))
        total = total - entropy * (share * log_share).sum(dtype=values.dtype)
        by_share = -(log_share + (share >= floor).astype(values.dtype))
        by_norm = (by_share - (by_share * share).sum(dtype=values.dtype)) / denominator
        gradients.append(torch.from_numpy(by_norm * entropy + l1))
    return torch.tensor(total, dtype=norms[0].dtype), gradients


class EdgeSparsity(torch.autograd.Function):
    """The regulariser's L1 and entropy terms summed over the layers, from each layer's edge
    norms, as one graph node whose gradient is written out (``sparsity_and_gradients``; the
    operations of ``edge_sparsity`` would be about twenty nodes per layer in autograd's graph,
    each a few microseconds of dispatch on the tiny ``(out, in)`` tensors of a small KAN).
    Differentiable once: a backward pass that builds a graph through it raises."""

    @staticmethod
    def forward(ctx, lamb_l1: float, lamb_entropy: float, *norms: torch.Tensor) -> torch.Tensor:
        total, gradients = sparsity_and_gradients(norms, lamb_l1, lamb_entropy)
        ctx.save_for_backward(*gradients)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return (None, None, *(grad * gradient for gradient in ctx.saved_tensors))
