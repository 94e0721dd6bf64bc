"""KAN 2.0's structure tools: which inputs a function separates, which groups it treats as one.

Every function takes a trained ``KAN`` or any differentiable callable ``f`` mapping ``(N, d)``
inputs to ``(N,)`` or ``(N, 1)`` outputs, and the samples ``x`` ``(N, d)`` to read it on (a
KAN's kept training sample by default). They read derivatives at the samples, by autograd in
float64 where the model allows:

- ``feature_interaction``: ``(d, d)``, how strongly each pair of inputs interacts: the mean
  ``|d^2 f / dx_i dx_j|`` over the samples, divided by the largest entry (``mode="mul"``: the
  Hessian of ``log |f|``, where products become sums).
- ``detect_separability``: the groups of inputs that ``f`` adds (``f = g(x_A) + h(x_B)``: the
  mixed second derivatives across groups vanish) or multiplies (``f = g(x_A) h(x_B)``: those of
  ``log |f|`` vanish); ``test_separability`` checks one proposed split.
- ``test_symmetry``: whether ``f`` depends on a group of inputs only through one combination
  ``h(x_group)``: then the gradient with respect to the group points the same way whatever the
  other inputs are.
- ``tree``: the modular tree (sums, products and compositions, innermost last) found by
  applying those tests recursively; ``plot_tree`` draws it.

Thresholds are relative (the interaction matrix is normalised), so they hold in any units.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

__all__ = [
    "feature_interaction",
    "detect_separability",
    "test_separability",
    "test_symmetry",
    "Tree",
    "tree",
    "plot_tree",
]

_EPS = 1e-12


def _function_and_samples(model, x: torch.Tensor | None) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """A float64 callable ``(N, d) -> (N,)`` and the samples to read it on."""
    if x is None:
        x = getattr(model, "sample_input", None)
        if x is None:
            raise ValueError("x is needed: pass samples (N, d), or fit the KAN first (it keeps a sample of its inputs)")
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be (N, d) samples with N >= 2, got shape {tuple(x.shape)}")
    dtype = getattr(model, "dtype", None)
    if isinstance(model, torch.nn.Module) and dtype is not None and dtype != torch.float64:
        import copy

        model = copy.deepcopy(model).to(torch.float64)  # second derivatives in float64
    x = x.detach().to(torch.float64)

    def f(inputs: torch.Tensor) -> torch.Tensor:
        out = model(inputs)
        if out.dim() == 2:
            if out.shape[1] != 1:
                raise ValueError(f"the function must have one output, got {out.shape[1]}; pick one, e.g. "
                                 "lambda x: model(x)[:, j]")
            out = out[:, 0]
        return out

    return f, x


def _derivatives(f, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Values ``(N,)``, gradients ``(N, d)`` and Hessians ``(N, d, d)`` at every sample."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        values = f(x)
        (grad,) = torch.autograd.grad(values.sum(), x, create_graph=True)
        rows = []
        for j in range(x.shape[1]):
            (row,) = torch.autograd.grad(grad[:, j].sum(), x, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(x) if row is None else row)
    return values.detach(), grad.detach(), torch.stack(rows, dim=1).detach()


def _log_hessian(values, grad, hessian) -> torch.Tensor:
    """Hessian of ``log |f|``: ``H / f - g g^T / f^2`` (samples where f is 0 dropped)."""
    keep = values.abs() > _EPS * values.abs().max().clamp_min(_EPS)
    v, g, h = values[keep], grad[keep], hessian[keep]
    return h / v[:, None, None] - g[:, :, None] * g[:, None, :] / (v**2)[:, None, None]


def feature_interaction(model, x: torch.Tensor | None = None, mode: str = "add") -> torch.Tensor:
    """``(d, d)`` mean ``|d^2 f / dx_i dx_j|`` over the samples (of ``log |f|`` with
    ``mode="mul"``), each input's derivatives taken in units of its spread over the samples,
    divided by the largest entry (module docstring)."""
    if mode not in ("add", "mul"):
        raise ValueError(f"mode must be 'add' or 'mul', got {mode!r}")
    f, x = _function_and_samples(model, x)
    values, grad, hessian = _derivatives(f, x)
    if mode == "mul":
        hessian = _log_hessian(values, grad, hessian)
    return _normalised_interaction(x, hessian)


def _normalised_interaction(x: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """Mean ``|d^2 f / (dz_i dz_j)|`` with each input in units of its spread over the samples
    (units-free), divided by the largest entry."""
    spread = x.std(0).clamp_min(_EPS)
    matrix = (hessian * spread[None, :, None] * spread[None, None, :]).abs().mean(0)
    return matrix / matrix.max().clamp_min(_EPS)


def _components(matrix: torch.Tensor, variables: Sequence[int], threshold: float) -> list[list[int]]:
    """Connected groups of ``variables`` where an off-diagonal entry above ``threshold`` joins two."""
    groups = [[v] for v in variables]
    for a, b in itertools.combinations(variables, 2):
        if matrix[a, b] > threshold:
            ga = next(g for g in groups if a in g)
            gb = next(g for g in groups if b in g)
            if ga is not gb:
                ga.extend(gb)
                groups.remove(gb)
    return [sorted(g) for g in sorted(groups, key=min)]


def detect_separability(model, x: torch.Tensor | None = None, mode: str = "add", threshold: float = 1e-2,
                        variables: Sequence[int] | None = None) -> list[list[int]]:
    """The finest split of the inputs (``variables``, default all) into groups that ``f`` adds
    (``mode="add"``) or multiplies (``mode="mul"``); one group means not separable. Two inputs
    are joined when their normalised interaction (``feature_interaction``) exceeds ``threshold``."""
    matrix = feature_interaction(model, x, mode)
    variables = list(range(matrix.shape[0])) if variables is None else list(variables)
    return _components(matrix, variables, threshold)


def test_separability(model, x: torch.Tensor | None = None, groups: Sequence[Sequence[int]] = (), mode: str = "add",
                      threshold: float = 1e-2) -> bool:
    """Whether ``f`` separates into ``groups`` (a partition of some inputs) additively or
    multiplicatively: every interaction across two groups is at most ``threshold``."""
    if len(groups) < 2:
        raise ValueError(f"groups must hold at least two groups of inputs, got {groups!r}")
    matrix = feature_interaction(model, x, mode)
    return all(float(matrix[a, b]) <= threshold
               for g1, g2 in itertools.combinations(groups, 2) for a in g1 for b in g2)


def _symmetry_score(f, x: torch.Tensor, group: Sequence[int], n_anchor: int = 32, n_other: int = 16,
                    seed: int = 0) -> float:
    """1 - the worst mean alignment of the group's gradient directions when the other inputs vary."""
    group = list(group)
    rest = [j for j in range(x.shape[1]) if j not in group]
    if len(group) < 2 or not rest:  # one input, or all of them: trivially one combination
        return 0.0
    generator = torch.Generator().manual_seed(seed)
    anchors = x[torch.randperm(x.shape[0], generator=generator)[:n_anchor]]
    others = x[torch.randint(0, x.shape[0], (anchors.shape[0], n_other), generator=generator)]  # (A, O, d)
    points = anchors[:, None, :].expand(-1, n_other, -1).clone()
    points[:, :, rest] = others[:, :, rest]
    flat = points.reshape(-1, x.shape[1]).requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(flat).sum(), flat)
    g = grad[:, group].reshape(anchors.shape[0], n_other, len(group))
    norm = g.norm(dim=-1, keepdim=True)
    alive = norm[..., 0] > 1e-8 * norm.max().clamp_min(_EPS)
    unit = g / norm.clamp_min(_EPS)
    reference = unit[:, :1]
    cosine = (unit * reference).sum(-1).abs()  # sign may flip with the outer function's slope
    misalignment = ((1 - cosine) * alive).sum() / alive.sum().clamp_min(1)
    return float(misalignment)


def test_symmetry(model, x: torch.Tensor | None = None, group: Sequence[int] = (), threshold: float = 1e-3) -> bool:
    """Whether ``f(x) = g(h(x_group), x_rest)``: the gradient with respect to ``group`` keeps its
    direction (up to sign) when the other inputs change, within ``threshold`` (mean ``1 - |cos|``)."""
    if not group:
        raise ValueError("group must name at least one input")
    f, x = _function_and_samples(model, x)
    if any(not 0 <= j < x.shape[1] for j in group):
        raise ValueError(f"group {list(group)} names inputs outside 0..{x.shape[1] - 1}")
    return _symmetry_score(f, x, group) <= threshold


@dataclass
class Tree:
    """A node of the modular tree: ``kind`` ``"+"`` / ``"*"`` (its children are added or
    multiplied), ``"f"`` (a function of one combination of the first child's inputs and of the
    other children), or ``"leaf"`` (a group with no structure found); ``variables`` it depends on."""

    kind: str
    variables: list[int]
    children: list["Tree"] = field(default_factory=list)

    def describe(self, names: Sequence[str] | None = None) -> str:
        """One line: ``x_1 + x_2 * f(h(x_3, x_4), x_5)``-style nesting of the groups."""
        names = names or [f"x_{i + 1}" for i in range(max(self.variables) + 1)]
        if self.kind == "leaf":
            inner = ", ".join(names[v] for v in self.variables)
            return names[self.variables[0]] if len(self.variables) == 1 else f"g({inner})"
        if self.kind == "f":
            inner = ", ".join(child.describe(names) for child in self.children)
            return f"f(h({inner}))" if len(self.children) == 1 else f"f({self._inner(names)})"
        joined = f" {self.kind} ".join(_bracket(child.describe(names), child.kind, self.kind) for child in self.children)
        return joined

    def _inner(self, names) -> str:
        first, *others = self.children
        return ", ".join([f"h({first.describe(names)})", *(child.describe(names) for child in others)])


def _bracket(text: str, child_kind: str, kind: str) -> str:
    return f"({text})" if child_kind == "+" and kind == "*" else text


def tree(model, x: torch.Tensor | None = None, threshold: float = 1e-2, symmetry_threshold: float = 1e-3) -> Tree:
    """The modular tree of ``f``: split the inputs into additive groups, else into factors of a
    product (up to an added constant, ``_product_components``), and split each group again the
    same way, reading ``f`` itself; a group that does not split is searched
    for its largest subgroup that ``f`` depends on only through one combination
    (``test_symmetry``), which becomes an inner node. Inputs ``f`` does not depend on are left out."""
    f, x = _function_and_samples(model, x)
    _, grad, hessian = _derivatives(f, x)
    interaction = _normalised_interaction(x, hessian)
    active = [j for j in range(x.shape[1]) if float(grad[:, j].abs().mean()) > 1e-8 * float(grad.abs().mean())]
    return _build(f, x, active, interaction, threshold, symmetry_threshold)


def _product_components(f, x: torch.Tensor, variables: list[int], threshold: float, n_anchor: int = 24,
                        n_other: int = 8, seed: int = 0) -> list[list[int]]:
    """The finest split of ``variables`` into groups whose part of ``f`` is a product plus a
    constant. Inside an additive group, ``f = a(x_rest) + c + p(x_1) q(x_2)``, so ``log |f|``
    does not show the product; but then ``r = f - f_i f_j / f_ij = a(x_rest) + c`` for ``i``
    in one factor and ``j`` in the other, whatever ``x_variables`` are. So ``i`` and ``j`` are
    joined when ``r`` changes (relative to ``f``'s spread) as ``x_variables`` change with the
    other inputs held."""
    generator = torch.Generator().manual_seed(seed)
    anchors = x[torch.randperm(x.shape[0], generator=generator)[:n_anchor]]
    others = x[torch.randint(0, x.shape[0], (anchors.shape[0], n_other), generator=generator)]
    points = anchors[:, None, :].expand(-1, n_other, -1).clone()
    points[:, :, variables] = others[:, :, variables]
    values, grad, hessian = _derivatives(f, points.reshape(-1, x.shape[1]))
    values = values.reshape(anchors.shape[0], n_other)
    spread = values.std().clamp_min(_EPS)
    joined = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for i, j in itertools.combinations(variables, 2):
        mixed = hessian[:, i, j].reshape(anchors.shape[0], n_other)
        usable = mixed.abs() > 1e-6 * mixed.abs().max().clamp_min(_EPS)
        if not usable.any():
            continue  # no interaction at all: the additive test has the say
        product = (grad[:, i] * grad[:, j]).reshape(anchors.shape[0], n_other)
        r = torch.where(usable, values - product / torch.where(usable, mixed, torch.ones_like(mixed)), 0.0)
        count = usable.sum(1)
        mean = r.sum(1) / count.clamp_min(1)
        deviation = (torch.where(usable, (r - mean[:, None]) ** 2, 0.0).sum(1) / count.clamp_min(1)).sqrt()
        rows = count > 1
        score = float((deviation[rows] / spread).mean()) if rows.any() else 0.0
        joined[i, j] = joined[j, i] = score
    return _components(joined, variables, threshold)


def _build(f, x, variables, interaction, threshold, symmetry_threshold) -> Tree:
    if len(variables) <= 1:
        return Tree("leaf", list(variables))
    groups = _components(interaction, variables, threshold)
    kind = "+"
    if len(groups) == 1:
        groups, kind = _product_components(f, x, list(variables), threshold), "*"
    if len(groups) > 1:
        return Tree(kind, list(variables), [_build(f, x, g, interaction, threshold, symmetry_threshold) for g in groups])
    # no split: the largest proper subgroup f sees through one combination, if any
    for size in range(len(variables) - 1, 1, -1):
        for group in itertools.combinations(variables, size):
            if _symmetry_score(f, x, group) <= symmetry_threshold:
                rest = [v for v in variables if v not in group]
                inner = _build(f, x, list(group), interaction, threshold, symmetry_threshold)
                return Tree("f", list(variables), [inner, *(Tree("leaf", [v]) for v in rest)])
    return Tree("leaf", list(variables))


def plot_tree(node: Tree, path=None, names: Sequence[str] | None = None, ax=None):
    """Draw a ``Tree`` (inputs at the bottom, the output at the top); returns the Figure and
    writes a PNG to ``path`` if given."""
    from matplotlib.figure import Figure

    names = names or [f"x_{i + 1}" for i in range(max(node.variables) + 1)]
    figure = None
    if ax is None:
        figure = Figure(figsize=(max(3.0, 1.2 * len(node.variables) + 1), 3.5))
        ax = figure.add_subplot()
    positions: dict[int, tuple[float, float]] = {}
    leaves = iter(range(len(node.variables) + 8))

    def place(n: Tree, depth: int) -> tuple[float, float]:
        if n.kind == "leaf" and len(n.variables) == 1:
            x_pos = float(next(leaves))
            positions[id(n)] = (x_pos, 0.0)
            ax.text(x_pos, -0.35, names[n.variables[0]], ha="center", va="top")
            return positions[id(n)]
        children = n.children or [Tree("leaf", [v]) for v in n.variables]
        points = [place(child, depth + 1) for child in children]
        centre = (sum(p[0] for p in points) / len(points), 1.0 + max(p[1] for p in points))
        positions[id(n)] = centre
        label = {"+": "+", "*": "×", "f": "f∘h", "leaf": "g"}[n.kind]
        ax.text(centre[0], centre[1], label, ha="center", va="center",
                bbox={"boxstyle": "circle", "facecolor": "white", "edgecolor": "black"})
        for p in points:
            ax.plot([p[0], centre[0]], [p[1], centre[1]], color="black", lw=1, zorder=0)
        return centre

    top = place(node, 0)
    ax.plot([top[0], top[0]], [top[1], top[1] + 0.6], color="black", lw=1, zorder=0)
    ax.set_axis_off()
    ax.set_ylim(-0.8, top[1] + 0.8)
    if figure is not None and path is not None:
        figure.savefig(path, dpi=120, bbox_inches="tight")
    return figure if figure is not None else ax.figure
