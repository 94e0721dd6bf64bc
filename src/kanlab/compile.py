"""Formula to KAN, and growing a KAN: ``from_formula``, ``expand_width``, ``expand_depth``.

``from_formula(expr, variables)`` writes a sympy expression built from +, *, numbers, powers
and library functions as a KAN whose edges are symbolic. The expression is read as a graph
of nodes:

- a *sum node* is ``sum_t c_t * f_t(a_t * v_t + b_t) + const`` over earlier nodes ``v_t``
  (one edge per term; an affine argument of a function is absorbed into its edge);
- a *product node* (a KAN 2.0 multiplication node) multiplies factors, each a sum of edges
  from earlier nodes (one subnode per factor);
- an input variable is a node of layer 0.

A node sits one layer after its deepest source; sources from further back are carried
forward by identity edges, and two terms of one node that read the same source are split
so that every (source, subnode) pair has at most one edge. Unused edges are masked.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .functions import Library
from .model import KAN
from .symbolic import resolve_library

__all__ = ["from_formula", "expand_width", "expand_depth"]


# ---------------------------------------------------------------------- the node graph


@dataclass(eq=False)
class _Node:
    """A value in the graph: an input, a sum of terms or a product of factors."""

    kind: str  # "input", "sum" or "product"
    index: int = -1  # input position
    rows: list = field(default_factory=list)  # sum: one row; product: one row per factor
    depth: int = 0


@dataclass
class _Term:
    """``c * f(a * source + b)`` for the library entry named ``name``."""

    name: str
    source: _Node
    a: float = 1.0
    b: float = 0.0
    c: float = 1.0


@dataclass
class _Row:
    """A subnode: a sum of terms plus a constant."""

    terms: list
    const: float = 0.0


class _Builder:
    def __init__(self, variables, library: Library):
        import sympy

        self.sympy = sympy
        self.variables = list(variables)
        self.inputs = {v: _Node("input", index=n) for n, v in enumerate(self.variables)}
        self.library = library
        self.nodes: dict = {}  # memo: sympy expression -> node
        x = sympy.Symbol("x", real=True)
        self.functions, self.powers, self.identity = {}, {}, None
        for entry in library:
            form = entry.sympy(x)
            if form == x:
                self.identity = entry.name
            elif form.is_Pow and form.base == x and form.exp.is_Number:
                self.powers.setdefault(form.exp, entry.name)
            elif getattr(form, "args", None) == (x,) and not form.is_Pow:
                self.functions.setdefault(form.func, entry.name)
        if self.identity is None:
            raise ValueError("lib must contain the identity function 'x' to build a KAN from a formula")

    # expression -> row (sum of terms + constant)
    def row(self, expr) -> _Row:
        sympy = self.sympy
        if not expr.free_symbols:
            return _Row([], self.number(expr))
        if expr.is_Add:
            const, rest = expr.as_independent(*self.variables, as_Add=True)
            terms = []
            for arg in sympy.Add.make_args(rest):
                part = self.row(arg)
                terms.extend(part.terms)
                const = const + part.const
            return _Row(terms, self.number(const))
        if expr.is_Mul:
            coeff, rest = expr.as_independent(*self.variables, as_Add=False)
            if coeff != 1:
                part = self.row(rest)
                k = self.number(coeff)
                return _Row([_Term(t.name, t.source, t.a, t.b, t.c * k) for t in part.terms], part.const * k)
            return _Row([_Term(self.identity, self.product(expr))])
        if expr in self.inputs:
            return _Row([_Term(self.identity, self.inputs[expr])])
        if expr.is_Pow:
            return _Row([self.power(expr)])
        if isinstance(expr, sympy.Function) and len(expr.args) == 1:
            name = self.functions.get(expr.func)
            if name is None:
                raise ValueError(f"expr: {expr.func} is not in the function library; register it or rewrite the formula")
            return _Row([self.apply(name, expr.args[0])])
        if isinstance(expr, sympy.Function):
            raise ValueError(
                f"expr: {expr} is not a one-argument function of the library; register it (Library.register) "
                "and pass lib=..."
            )
        raise ValueError(
            f"expr: cannot build a KAN for the sub-expression {expr} ({type(expr).__name__}); use +, *, "
            "numeric powers and library functions"
        )

    def number(self, value) -> float:
        result = complex(self.sympy.N(value))
        if result.imag != 0:
            raise ValueError(f"expr: the constant {value} is not real")
        return float(result.real)

    def power(self, expr) -> _Term:
        base, exponent = expr.base, expr.exp
        if not exponent.is_Number:
            if base.free_symbols:
                raise ValueError(f"expr: {expr} has a variable exponent; write it with exp and log")
            return self.apply(self.functions[self.sympy.exp], exponent * self.sympy.log(base))
        if exponent in self.powers:
            return self.apply(self.powers[exponent], base)
        if exponent.is_Integer and abs(int(exponent)) > 1:
            # split an integer power the library lacks into a product of powers it has
            n = int(exponent)
            half = n // 2 if n > 0 else -((-n) // 2)
            product = self.sympy.Mul(base**half, base ** (n - half), evaluate=False)
            return _Term(self.identity, self.product(product))
        raise ValueError(f"expr: the power {expr} needs the exponent {exponent} in the library")

    def apply(self, name: str, argument) -> _Term:
        """``name(argument)`` as one term, absorbing an affine argument into the edge."""
        inner = self.row(argument)
        if len(inner.terms) == 1 and inner.terms[0].name == self.identity:
            t = inner.terms[0]
            return _Term(name, t.source, a=t.c * t.a, b=t.c * t.b + inner.const)
        const, _ = argument.as_independent(*self.variables, as_Add=True)
        node = self.sum_node(argument - const, _Row(inner.terms, 0.0))
        return _Term(name, node, a=1.0, b=inner.const)

    def sum_node(self, key, row: _Row) -> _Node:
        if key not in self.nodes:
            self.nodes[key] = _Node("sum", rows=[row])
        return self.nodes[key]

    def product(self, expr) -> _Node:
        if expr not in self.nodes:
            factors = self.sympy.Mul.make_args(expr)
            self.nodes[expr] = _Node("product", rows=[self.row(f) for f in factors])
        return self.nodes[expr]


def _split_repeated_sources(node: _Node, memo: set) -> None:
    """Give each (row, source) at most one edge: extra terms on a source move into a new sum node."""
    if id(node) in memo or node.kind == "input":
        return
    memo.add(id(node))
    for row in node.rows:
        seen, kept = {}, []
        for term in row.terms:
            if id(term.source) in seen:
                helper = _Node("sum", rows=[_Row([term])])
                kept.append(_Term("__identity__", helper))
            else:
                seen[id(term.source)] = term
                kept.append(term)
        row.terms = kept
        for term in row.terms:
            _split_repeated_sources(term.source, memo)


def _depth(node: _Node, memo: dict) -> int:
    if node.kind == "input":
        return 0
    if id(node) not in memo:
        memo[id(node)] = 1 + max((_depth(t.source, memo) for row in node.rows for t in row.terms), default=0)
    node.depth = memo[id(node)]
    return node.depth


def from_formula(
    expr,
    variables: Sequence,
    *,
    lib=None,
    domain: Sequence[tuple[float, float]] | tuple[float, float] = (-1.0, 1.0),
    grid: int = 5,
    k: int = 3,
    samples: int = 1000,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    base_fun: str = "silu",
) -> KAN:
    """A KAN computing the sympy expression(s) ``expr`` of ``variables``, with symbolic edges.

    ``expr`` is one expression or a list (one per output). ``domain`` is the input range
    (one ``(low, high)`` for all, or one per variable): the grids of every layer are placed
    over the values that random inputs from it produce there, and those inputs are kept as
    the model's sample, so ``unfix_symbolic_all`` / ``perturb`` can turn the edges into
    splines for fine-tuning.
    """
    import sympy

    exprs = [sympy.sympify(e) for e in (expr if isinstance(expr, (list, tuple)) else [expr])]
    variables = [sympy.Symbol(v, real=True) if isinstance(v, str) else v for v in variables]
    unknown = set().union(*(e.free_symbols for e in exprs)) - set(variables)
    if unknown:
        raise ValueError(f"variables: the formula uses {sorted(map(str, unknown))}, which are not listed")
    # sympy symbols compare by name and assumptions: adopt the caller's symbols
    library = resolve_library(lib)
    builder = _Builder(variables, library)
    outputs = []
    for e in exprs:
        row = builder.row(sympy.sympify(e))
        outputs.append(_Node("sum", rows=[row]))
    memo: set = set()
    for node in outputs:
        _split_repeated_sources(node, memo)
    depths: dict = {}
    depth = max(max(_depth(node, depths) for node in outputs), 1)
    layers = _place(outputs, builder, depth)
    model = _to_model(layers, builder, library, grid=grid, k=k, seed=seed, dtype=dtype, base_fun=base_fun)
    _place_grids(model, variables, domain, samples, seed)
    return model


def _place(outputs, builder, depth: int) -> list[list[_Node]]:
    """Nodes per node layer ``0..depth``; sources further back are carried by identity edges."""
    layers: list[list[_Node]] = [[builder.inputs[v] for v in builder.variables]] + [[] for _ in range(depth)]
    carried: dict = {}

    def at(node: _Node, layer: int) -> _Node:
        """``node`` as seen in node layer ``layer`` (itself, or a chain of identity copies)."""
        if node.depth == layer:
            return node
        key = (id(node), layer)
        if key not in carried:
            copy_node = _Node("sum", rows=[_Row([_Term("__identity__", at(node, layer - 1))])], depth=layer)
            carried[key] = copy_node
            placed.add(id(copy_node))
            layers[layer].append(copy_node)
        return carried[key]

    placed: set = set()

    def place(node: _Node, layer: int) -> None:
        # the output nodes all sit in the last layer; any other node where its depth says
        if node.kind == "input" or id(node) in placed:
            return
        placed.add(id(node))
        node.depth = layer
        layers[layer].append(node)
        for row in node.rows:
            for term in row.terms:
                place(term.source, term.source.depth)
                term.source = at(term.source, layer - 1)

    for node in outputs:
        place(node, depth)
    # deterministic order: sums before products within a layer, in order of placement
    return [[n for n in nodes if n.kind != "product"] + [n for n in nodes if n.kind == "product"] for nodes in layers]


def _to_model(layers, builder, library, **options) -> KAN:
    width, arities = [], []
    for nodes in layers:
        n_sum = sum(1 for n in nodes if n.kind != "product")
        products = [n for n in nodes if n.kind == "product"]
        width.append([n_sum, len(products)])
        arities.append([len(n.rows) for n in products])
    for l, nodes in enumerate(layers[1:], start=1):
        for node in nodes:
            if node.kind == "product" and len(node.rows) < 2:
                raise ValueError("expr: a product needs at least two factors")
    model = KAN(width, mult_arity=arities, **options)
    identity = library[builder.identity]
    with torch.no_grad():
        for l, layer in enumerate(model.layers):
            layer.mask.zero_()
            column = {id(n): position for position, n in enumerate(layers[l])}
            row_index = 0
            for node in layers[l + 1]:
                for row in node.rows:
                    for n_term, term in enumerate(row.terms):
                        col = column[id(term.source)]
                        function = identity if term.name == "__identity__" else library[term.name]
                        d = row.const if n_term == 0 else 0.0
                        layer.mask[row_index, col] = 1.0
                        layer.set_symbolic(row_index, col, function, (term.a, term.b, term.c, d))
                    if not row.terms:
                        raise ValueError("expr: a constant factor or output cannot be a KAN node")
                    row_index += 1
    return model


def _place_grids(model: KAN, variables, domain, samples: int, seed: int) -> None:
    """Put every layer's knots over the values random inputs from ``domain`` give it."""
    n = len(variables)
    if isinstance(domain[0], (int, float)):
        domain = [tuple(domain)] * n
    if len(domain) != n or any(len(d) != 2 or not d[0] < d[1] for d in domain):
        raise ValueError(f"domain must be (low, high) or one (low, high) per variable ({n}), got {domain!r}")
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(samples, n, generator=generator, dtype=torch.float64)
    low = torch.tensor([d[0] for d in domain], dtype=torch.float64)
    high = torch.tensor([d[1] for d in domain], dtype=torch.float64)
    x = (low + (high - low) * unit).to(dtype=model.dtype, device=model.device)
    model.remember_inputs(x)
    model.update_grid(x)


# ---------------------------------------------------------------------- growing


def expand_depth(model: KAN) -> KAN:
    """A copy with one more layer that passes every output through unchanged.

    The new layer's diagonal edges are the symbolic identity; its other edges are active
    splines starting at zero, so training can use them.
    """
    new = copy.deepcopy(model)
    n_out = model.width_in[-1]
    extra = KAN([n_out, n_out], grid=model.grid, k=model.k, seed=model.seed, dtype=model.dtype, device=model.device,
                grid_range=model.grid_range, base_fun=model.config()["base_fun"])
    layer = extra.layers[0]
    identity = resolve_library(["x"])["x"]
    with torch.no_grad():
        layer.coef.zero_()
        layer.scale_base.zero_()
        for j in range(n_out):
            layer.set_symbolic(j, j, identity)
    new.layers.append(layer)
    new.width = [list(w) for w in model.width] + [[n_out, 0]]
    new.mult_arity = [list(a) for a in model.mult_arity] + [[]]
    if model.sample_input is not None:
        outputs = model(model.sample_input).detach()
        layer.update_grid(outputs)
    return new


def expand_width(model: KAN, l: int, n_added: int = 1, *, mult_arity: int | None = None) -> KAN:
    """A copy with ``n_added`` new nodes in hidden node layer ``l`` computing the same function.

    New sum nodes (or, with ``mult_arity``, multiplication nodes of that arity) get freshly
    initialised incoming edges and zero outgoing edges: the output is unchanged and training
    can grow them.
    """
    if not 0 < l < model.depth:
        raise ValueError(f"l must be a hidden node layer in [1, {model.depth - 1}], got {l}")
    if not isinstance(n_added, int) or n_added < 1:
        raise ValueError(f"n_added must be an integer >= 1, got {n_added!r}")
    width = [list(w) for w in model.width]
    arities = [list(a) for a in model.mult_arity]
    if mult_arity is None:
        width[l][0] += n_added
    else:
        width[l][1] += n_added
        arities[l] += [mult_arity] * n_added
    config = model.config()
    options = {key: config[key] for key in ("grid", "k", "grid_range", "grid_eps", "base_fun", "noise_scale")}
    bigger = KAN(width, mult_arity=arities, seed=model.seed, dtype=model.dtype, device=model.device, **options)
    # old node positions in the bigger model
    n_sum, n_mult = model.width[l]
    old_nodes = list(range(n_sum)) + [
        width[l][0] + m for m in range(n_mult)
    ]
    added_sum = mult_arity is None
    with torch.no_grad():
        for position, (old, new) in enumerate(zip(model.layers, bigger.layers)):
            rows = list(range(old.out_features))
            cols = list(range(old.in_features))
            if position == l - 1:  # layer feeding node layer l: old subnode rows move past the new sums
                shift = n_added if added_sum else 0
                rows = list(range(n_sum)) + [r + shift for r in range(n_sum, old.out_features)]
            if position == l:  # layer reading node layer l: old columns, new ones start silent
                cols = old_nodes
                silent = [c for c in range(new.in_features) if c not in cols]
                new.coef[:, silent] = 0.0
                new.scale_base[:, silent] = 0.0
            _copy_edges(old, new, rows, cols)
    bigger.sample_input = None if model.sample_input is None else model.sample_input.clone()
    bigger.input_index = None if model.input_index is None else model.input_index.clone()
    bigger._n_inputs = model.n_inputs
    return bigger


def _copy_edges(old, new, rows: list[int], cols: list[int]) -> None:
    """Copy every edge of layer ``old`` into layer ``new`` at ``rows`` x ``cols``."""
    r = torch.as_tensor(rows, dtype=torch.long)
    c = torch.as_tensor(cols, dtype=torch.long)
    grid = r[:, None], c[None, :]
    new.coef[grid] = old.coef
    new.scale_base[grid] = old.scale_base
    new.scale_sp[grid] = old.scale_sp
    new.mask[grid] = old.mask
    new.grid[c] = old.grid
    new.grid_changed()
    for (j, i), function in old.symbolic_edges.items():
        new.set_symbolic(rows[j], cols[i], function, old.symbolic_affine[j, i].tolist())
