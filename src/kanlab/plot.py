"""Pictures of a KAN as in the paper: nodes per layer, each edge drawn as a small plot of its
function, faded by its importance; symbolic edges in red with their function's name,
multiplication nodes marked with a cross.

Drawing needs no earlier forward pass: edge curves are evaluated on the model's kept
sample (or ``x``), or across each layer's grid when there is neither. matplotlib is an
optional extra (``pip install "kanlab[plot]"``); figures are built without pyplot, so no
display is needed, and a file is written only when ``path`` is given (atomically).
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["draw"]


def _matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError('plotting needs matplotlib: pip install "kanlab[plot]" (or pip install matplotlib)') from None
    return Figure


def _layer_inputs(model, x):
    """Inputs of every layer: on samples, or evenly across each layer's knot span."""
    if x is not None or model.sample_input is not None:
        return model.layer_inputs(x)
    from .splines import points_across

    return [points_across(layer.grid, layer.k, 101) for layer in model.layers]


def _positions(n: int) -> list[float]:
    return [(m + 0.5) / n for m in range(n)]


def draw(
    model,
    path=None,
    *,
    ax=None,
    x: torch.Tensor | None = None,
    in_vars: Sequence[str] | None = None,
    out_vars: Sequence[str] | None = None,
    title: str | None = None,
    beta: float = 3.0,
    scale: float = 1.0,
    dpi: int = 150,
):
    """Draw ``model``; returns the matplotlib Figure, and writes a PNG to ``path`` if given.

    ``ax`` draws into an existing Axes. ``x`` gives the inputs whose range the edge curves
    span (default: the kept training sample). An edge's opacity is ``tanh(beta * score)``
    with its KAN 2.0 attribution score (all opaque without samples). ``in_vars`` /
    ``out_vars`` label the inputs and outputs; ``scale`` sizes a new figure.
    """
    Figure = _matplotlib()
    if in_vars is not None and len(in_vars) != model.n_inputs:
        raise ValueError(f"in_vars must name all {model.n_inputs} inputs, got {len(in_vars)}")
    if out_vars is not None and len(out_vars) != model.width_in[-1]:
        raise ValueError(f"out_vars must name all {model.width_in[-1]} outputs, got {len(out_vars)}")
    inputs = _layer_inputs(model, x)
    with torch.no_grad():
        values = [layer.edge_activations(h) for layer, h in zip(model.layers, inputs)]
        have_samples = x is not None or model.sample_input is not None
        if have_samples:
            from .prune import attribute

            scores = attribute(model, x).edge
        else:
            scores = [torch.ones_like(v[0]) for v in values]

    depth = model.depth
    widest = max(model.width_in)
    if ax is None:
        figure = Figure(figsize=(max(4.0, 1.6 * widest) * scale, 2.6 * depth * scale), dpi=dpi)
        ax = figure.add_subplot(1, 1, 1)
    else:
        figure = ax.figure
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.25, depth + 0.25)

    node_x = [_positions(n) for n in model.width_in]
    box_w = 0.1
    box_h = 0.22
    for l, layer in enumerate(model.layers):
        n_sum, _ = model.width[l + 1]
        # where each subnode (row) of layer l lands: its sum node, or spread around its product node
        targets, is_factor = [], []
        for j in range(n_sum):
            targets.append(node_x[l + 1][j])
            is_factor.append(False)
        for m, arity in enumerate(model.mult_arity[l + 1]):
            centre = node_x[l + 1][n_sum + m]
            spread = box_w * 0.6
            for f in range(arity):
                targets.append(centre + spread * (f - (arity - 1) / 2))
                is_factor.append(True)
        h = inputs[l]
        # the paper's layout: this layer's edge plots in one row, ordered by input then output
        edges = [(i, j) for i in range(layer.in_features) for j in range(layer.out_features) if float(layer.mask[j, i]) != 0.0]
        width_l = min(0.85 / max(len(edges), 1), box_w)
        height_l = min(box_h, 0.3)
        for position, (i, j) in enumerate(edges):
            cx = (position + 0.5) / len(edges)
            top_y = l + 1 - (0.12 if is_factor[j] else 0.0)
            alpha = float(torch.tanh(beta * scores[l][j, i]).clamp(0.05, 1.0)) if have_samples else 1.0
            symbolic = layer.symbolic_function(j, i)
            colour = "red" if symbolic is not None else "black"
            ax.plot([node_x[l][i], cx], [l + 0.03, l + 0.5 - height_l / 2], color=colour, lw=0.6, alpha=alpha)
            ax.plot([cx, targets[j]], [l + 0.5 + height_l / 2, top_y], color=colour, lw=0.6, alpha=alpha)
            _edge_box(ax, cx, l + 0.5, width_l, height_l, h[:, i], values[l][:, j, i], colour, alpha)
            if symbolic is not None:
                ax.text(cx + width_l * 0.55, l + 0.5, symbolic.name, color="red",
                        ha="left", va="center", fontsize=7, alpha=max(alpha, 0.4))
        for j in range(layer.out_features):
            if is_factor[j]:
                ax.plot([targets[j], _product_centre(model, l + 1, j, node_x)], [l + 1 - 0.12, l + 1], color="black", lw=0.6)
    for l, xs in enumerate(node_x):
        n_sum = model.width[l][0]
        for n, px in enumerate(xs):
            if n < n_sum:
                ax.scatter([px], [l], s=30, color="black", zorder=3)
            else:
                ax.scatter([px], [l], s=60, marker="x", color="black", linewidths=1.5, zorder=3)
    names_in = in_vars if in_vars is not None else [f"x_{m + 1}" for m in range(model.n_inputs)]
    if model.input_index is not None:
        names_in = [names_in[int(m)] for m in model.input_index]
    for px, name in zip(node_x[0], names_in):
        ax.text(px, -0.1, str(name), ha="center", va="top", fontsize=9)
    if out_vars is not None:
        for px, name in zip(node_x[-1], out_vars):
            ax.text(px, depth + 0.1, str(name), ha="center", va="bottom", fontsize=9)
    if title:
        ax.set_title(title)
    if path is not None:
        _save(figure, path, dpi)
    return figure


def _product_centre(model, l: int, row: int, node_x) -> float:
    n_sum, _ = model.width[l]
    start = n_sum
    for m, arity in enumerate(model.mult_arity[l]):
        if start <= row < start + arity:
            return node_x[l][n_sum + m]
        start += arity
    raise IndexError(row)


def _edge_box(ax, cx: float, cy: float, w: float, h: float, xs: torch.Tensor, ys: torch.Tensor, colour: str, alpha: float):
    """A small framed plot of one edge function, centred at ``(cx, cy)``."""
    order = xs.argsort()
    xs, ys = xs[order].double(), ys[order].double()
    span_x = float(xs[-1] - xs[0]) or 1.0
    span_y = float(ys.max() - ys.min()) or 1.0
    px = cx - w / 2 + w * (xs - xs[0]) / span_x
    py = cy - h / 2 + h * 0.1 + h * 0.8 * (ys - ys.min()) / span_y
    ax.plot([cx - w / 2, cx + w / 2, cx + w / 2, cx - w / 2, cx - w / 2],
            [cy - h / 2, cy - h / 2, cy + h / 2, cy + h / 2, cy - h / 2], color="black", lw=0.4, alpha=alpha)
    ax.plot(px.cpu().numpy(), py.cpu().numpy(), color=colour, lw=1.0, alpha=alpha)


def _save(figure, path, dpi: int) -> None:
    """Write the figure as PNG to ``path`` through a temporary file and a rename."""
    from .io import write_atomically

    write_atomically(path, lambda stream: figure.savefig(stream, format="png", dpi=dpi))
