"""Scores, attribution and pruning: functions that read a model and return a smaller one.

Scores are computed on demand from the model's kept training sample (or given inputs), so
no forward pass has to have happened before.

- ``edge_scores``: the paper's per-edge ``|phi|_1`` (mean absolute value over the sample).
- ``attribute``: KAN 2.0 attribution. Output nodes score 1; going back through the layers,
  an edge's score is its share of its subnode's spread, ``std(phi_ji) / std(subnode_j)``,
  times the subnode's score (a multiplication node passes its score to each of its
  subnodes), and a node's score is the sum over its outgoing edges. The input nodes' scores
  are the feature scores.

Pruning never changes its argument: ``prune_node`` / ``prune_input`` return a smaller model
whose output equals that of the model with the dropped nodes' edges masked; ``prune_edge``
returns a copy with weak edges masked. ``remove_edge`` / ``remove_node`` mask in place.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

__all__ = [
    "Attribution",
    "edge_scores",
    "attribute",
    "feature_score",
    "prune_node",
    "prune_edge",
    "prune_input",
    "prune",
    "remove_edge",
    "remove_node",
    "keep_nodes",
]

#: Added to a subnode's spread before dividing by it (a dead subnode passes no score).
_SPREAD_FLOOR = 1e-4


@dataclass
class Attribution:
    """KAN 2.0 scores: ``node`` per layer of nodes (``[width_in[l]]``, inputs first),
    ``edge`` per layer ``(out, in)`` and ``subnode`` per layer ``(out,)``."""

    node: list[torch.Tensor]
    edge: list[torch.Tensor]
    subnode: list[torch.Tensor]


def _activations(model, x):
    """Per layer: its inputs and its edge values ``(N, out, in)`` on the samples."""
    inputs = model.layer_inputs(x)
    with torch.no_grad():
        return inputs, [layer.edge_activations(h) for layer, h in zip(model.layers, inputs)]


def edge_scores(model, x: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The paper's edge scores ``mean |phi_ji|`` per layer, ``(out, in)``."""
    _, values = _activations(model, x)
    return [v.abs().mean(0) for v in values]


@torch.no_grad()
def attribute(model, x: torch.Tensor | None = None, node: tuple[int, int] | None = None) -> Attribution:
    """KAN 2.0 attribution scores of every node and edge (module docstring). ``node=(l, i)``
    attributes node ``i`` of node layer ``l`` (0: the inputs, ``depth``: the outputs) instead
    of the outputs: it scores 1, the nodes above it 0, and the scores below say how much each
    node and edge contributes to it."""
    _, values = _activations(model, x)
    top = model.depth
    node_score = torch.ones(model.width_in[-1], dtype=model.dtype, device=model.device)
    if node is not None:
        l, i = node
        if not (isinstance(l, int) and 0 <= l <= model.depth):
            raise ValueError(f"node layer l must be an int in 0..{model.depth}, got {l!r}")
        if not (isinstance(i, int) and 0 <= i < model.width_in[l]):
            raise ValueError(f"node i must be an int in 0..{model.width_in[l] - 1} for layer {l}, got {i!r}")
        top = l
        node_score = torch.zeros(model.width_in[l], dtype=model.dtype, device=model.device)
        node_score[i] = 1.0
    nodes, edges, subnodes = [node_score], [], []
    for l in range(top - 1, -1, -1):
        subnode_score = _to_subnodes(model, node_score, l + 1)
        edge_spread = values[l].std(0, correction=0) if values[l].shape[0] > 1 else values[l].abs()[0]
        subnode_spread = values[l].sum(-1).std(0, correction=0) if values[l].shape[0] > 1 else edge_spread.sum(-1)
        edge = edge_spread * (subnode_score / (subnode_spread + _SPREAD_FLOOR)).unsqueeze(1)
        node_score = edge.sum(0)
        nodes.insert(0, node_score)
        edges.insert(0, edge)
        subnodes.insert(0, subnode_score)
    for l in range(top, model.depth):  # above the attributed node: nothing flows
        nodes.append(torch.zeros(model.width_in[l + 1], dtype=model.dtype, device=model.device))
        edges.append(torch.zeros_like(values[l][0]))
        subnodes.append(torch.zeros(values[l].shape[1], dtype=model.dtype, device=model.device))
    return Attribution(nodes, edges, subnodes)


def _to_subnodes(model, node_score: torch.Tensor, l: int) -> torch.Tensor:
    """Scores of the subnodes feeding node layer ``l``: a product node's score goes to each factor."""
    n_sum, _ = model.width[l]
    parts = [node_score[:n_sum]]
    for m, arity in enumerate(model.mult_arity[l]):
        parts.append(node_score[n_sum + m].expand(arity))
    return torch.cat(parts)


def feature_score(model, x: torch.Tensor | None = None) -> torch.Tensor:
    """Attribution score of each model input ``(n_inputs,)``; pruned inputs score 0."""
    score = attribute(model, x).node[0]
    if model.input_index is None:
        return score
    full = score.new_zeros(model.n_inputs)
    full[model.input_index] = score
    return full


# ---------------------------------------------------------------------- shrinking


def _subnode_rows(model, l: int, nodes: list[int]) -> list[int]:
    """Rows of layer ``l - 1`` (subnodes) that feed the kept nodes of node layer ``l``."""
    n_sum, _ = model.width[l]
    starts = [n_sum]
    for arity in model.mult_arity[l]:
        starts.append(starts[-1] + arity)
    rows = []
    for node in nodes:
        if node < n_sum:
            rows.append(node)
        else:
            m = node - n_sum
            rows.extend(range(starts[m], starts[m + 1]))
    return rows


def keep_nodes(model, keep: list[list[int] | None]):
    """A new model keeping, per node layer, the listed nodes (``None`` keeps all).

    ``keep[0]`` selects input features (the new model still takes the full-width input);
    the output layer cannot be cut. The result computes what ``model`` computes with every
    edge into or out of a dropped node masked.
    """
    if len(keep) != model.depth + 1:
        raise ValueError(f"keep must list nodes for all {model.depth + 1} node layers, got {len(keep)}")
    keep = [list(range(model.width_in[l])) if nodes is None else sorted(set(int(n) for n in nodes)) for l, nodes in enumerate(keep)]
    if keep[-1] != list(range(model.width_in[-1])):
        raise ValueError("the output nodes cannot be pruned")
    for l, nodes in enumerate(keep):
        if not nodes:
            raise ValueError(f"pruning would leave node layer {l} empty; lower the threshold")
        if nodes[-1] >= model.width_in[l] or nodes[0] < 0:
            raise IndexError(f"node layer {l} has {model.width_in[l]} nodes; got {nodes}")
    new = copy.deepcopy(model)
    for l in range(model.depth):
        rows = _subnode_rows(model, l + 1, keep[l + 1])
        new.layers[l] = model.layers[l].sliced(rows, keep[l])
    width, arities = [], []
    for l, nodes in enumerate(keep):
        n_sum = model.width[l][0]
        kept_mult = [n - n_sum for n in nodes if n >= n_sum]
        width.append([sum(1 for n in nodes if n < n_sum), len(kept_mult)])
        arities.append([model.mult_arity[l][m] for m in kept_mult])
    new.width, new.mult_arity = width, arities
    if keep[0] != list(range(model.width_in[0])):
        index = torch.as_tensor(keep[0], dtype=torch.long, device=model.device)
        new.input_index = index if model.input_index is None else model.input_index[index]
    return new


def _check_threshold(value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _node_scores(model, x, method: str) -> list[torch.Tensor]:
    """Per node layer, a score for every node: attribution, or the paper's in/out max |phi|_1."""
    if method == "attribution":
        return attribute(model, x).node
    if method == "l1":
        scores = edge_scores(model, x)
        result = [None] * (model.depth + 1)
        for l in range(1, model.depth):
            incoming_sub = scores[l - 1].amax(1)  # per subnode of layer l - 1
            incoming = _max_over_factors(model, incoming_sub, l)
            outgoing = scores[l].amax(0)
            result[l] = torch.minimum(incoming, outgoing)
        return result
    raise ValueError(f"method must be 'attribution' or 'l1', got {method!r}")


def _max_over_factors(model, subnode_values: torch.Tensor, l: int) -> torch.Tensor:
    n_sum, _ = model.width[l]
    parts = [subnode_values[:n_sum]]
    start = n_sum
    for arity in model.mult_arity[l]:
        parts.append(subnode_values[start : start + arity].amax().reshape(1))
        start += arity
    return torch.cat(parts)


def prune_node(model, threshold: float = 1e-2, *, method: str = "attribution", x: torch.Tensor | None = None, active=None):
    """Drop hidden nodes whose score is below ``threshold``; returns a new, smaller model.

    ``method="attribution"`` (default) uses the KAN 2.0 node scores; ``"l1"`` the paper's
    rule (a node stays if its largest incoming and largest outgoing ``|phi|_1`` both pass).
    ``active`` lists the hidden nodes to keep per hidden layer instead of scoring them.
    """
    if active is not None:
        if len(active) != model.depth - 1:
            raise ValueError(f"active must list kept nodes for each of the {model.depth - 1} hidden layers")
        return keep_nodes(model, [None, *active, None])
    threshold = _check_threshold(threshold, "threshold")
    scores = _node_scores(model, x, method)
    keep = [None]
    for l in range(1, model.depth):
        kept = (scores[l] > threshold).nonzero().flatten().tolist()
        if not kept:  # never cut the network in two: keep the strongest node
            kept = [int(scores[l].argmax())]
        keep.append(kept)
    keep.append(None)
    return keep_nodes(model, keep)


@torch.no_grad()
def prune_edge(model, threshold: float = 3e-2, *, x: torch.Tensor | None = None):
    """A copy with every edge whose attribution score is below ``threshold`` masked."""
    threshold = _check_threshold(threshold, "threshold")
    scores = attribute(model, x).edge
    new = copy.deepcopy(model)
    for layer, score in zip(new.layers, scores):
        layer.mask.mul_((score >= threshold).to(layer.mask.dtype))
    return new


def prune_input(model, threshold: float = 1e-2, *, x: torch.Tensor | None = None, active=None):
    """Drop input features scoring below ``threshold`` (or keep those listed in ``active``).

    The new model still takes the full-width input and ignores the dropped columns.
    """
    if active is None:
        threshold = _check_threshold(threshold, "threshold")
        score = attribute(model, x).node[0]
        active = (score > threshold).nonzero().flatten().tolist() or [int(score.argmax())]
    else:
        # ``active`` names columns of the full input; map them to the first layer's inputs
        if model.input_index is not None:
            position = {int(c): n for n, c in enumerate(model.input_index)}
            missing = [c for c in active if c not in position]
            if missing:
                raise ValueError(f"active: inputs {missing} were already pruned")
            active = [position[c] for c in active]
    return keep_nodes(model, [active] + [None] * model.depth)


def prune(model, node_th: float = 1e-2, edge_th: float = 3e-2, *, method: str = "attribution", x: torch.Tensor | None = None):
    """``prune_node`` then ``prune_edge`` (pykan's ``prune``); returns a new model."""
    return prune_edge(prune_node(model, node_th, method=method, x=x), edge_th, x=x)


def _check_node(model, l: int, i: int) -> None:
    if not 0 <= l <= model.depth:
        raise IndexError(f"l must be a node layer in [0, {model.depth}], got {l}")
    if not 0 <= i < model.width_in[l]:
        raise IndexError(f"node layer {l} has {model.width_in[l]} nodes, got i={i}")


@torch.no_grad()
def remove_edge(model, l: int, i: int, j: int) -> None:
    """Mask the edge of layer ``l`` from node ``i`` to subnode ``j``, in place."""
    layer = model.layers[l] if 0 <= l < model.depth else None
    if layer is None or not (0 <= i < layer.in_features and 0 <= j < layer.out_features):
        raise IndexError(f"no edge (l={l}, i={i}, j={j}) in this model")
    layer.mask[j, i] = 0.0


@torch.no_grad()
def remove_node(model, l: int, i: int) -> None:
    """Mask every edge into and out of node ``i`` of node layer ``l``, in place."""
    _check_node(model, l, i)
    if l > 0:
        for row in _subnode_rows(model, l, [i]):
            model.layers[l - 1].mask[row, :] = 0.0
    if l < model.depth:
        model.layers[l].mask[:, i] = 0.0
