"""KAN: a stack of KAN layers, with KAN 2.0 multiplication nodes, as an ``nn.Module``.

``width`` lists the nodes per layer. An entry is an int (sum nodes) or ``[n_sum, n_mult]``:
``[2, [5, 2], 1]`` has 5 sum nodes and 2 multiplication nodes in the hidden layer. A
multiplication node of arity ``a`` takes ``a`` consecutive outputs ("subnodes") of the layer
below and returns their product, so the layer feeding a ``[n_sum, n_mult]`` entry has
``n_sum + sum(arities)`` outputs.

Operations that read or rewrite a trained model (training, grid extension, save / load)
live in their own modules; the methods here with pykan's names are thin calls into them.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .fused import fusable, fused_forward
from .layer import KANLinear, resolve_base_fun
from .pykan_names import check_keywords, reject_pykan_keywords

__all__ = ["KAN", "parse_width"]

#: How many training inputs a model keeps (``sample_input``) for grid changes and scores.
SAMPLE_LIMIT = 4096


def parse_width(width: Sequence) -> list[list[int]]:
    """Normalise a width list to ``[[n_sum, n_mult], ...]``, with a clear error for bad input."""
    if not isinstance(width, (list, tuple)) or len(width) < 2:
        raise ValueError(f"width must be a list of at least 2 layer sizes, e.g. [2, 5, 1]; got {width!r}")
    parsed = []
    for position, entry in enumerate(width):
        if isinstance(entry, int) and not isinstance(entry, bool):
            pair = [entry, 0]
        elif (
            isinstance(entry, (list, tuple))
            and len(entry) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in entry)
        ):
            pair = [int(entry[0]), int(entry[1])]
        else:
            raise ValueError(f"width[{position}] must be an int or [n_sum, n_mult], got {entry!r}")
        if pair[0] < 0 or pair[1] < 0 or sum(pair) < 1:
            raise ValueError(f"width[{position}] must have at least one node and no negative counts, got {entry!r}")
        parsed.append(pair)
    if parsed[0][1]:
        raise ValueError(f"width[0] is the input layer and cannot have multiplication nodes, got {width[0]!r}")
    return parsed


def _parse_arity(mult_arity: int | Sequence, width: list[list[int]]) -> list[list[int]]:
    """Arity of every multiplication node, per layer: an int for all, or one list per layer."""
    if isinstance(mult_arity, int) and not isinstance(mult_arity, bool):
        if mult_arity < 2:
            raise ValueError(f"mult_arity must be >= 2, got {mult_arity!r}")
        return [[mult_arity] * n_mult for _, n_mult in width]
    if not isinstance(mult_arity, (list, tuple)) or len(mult_arity) != len(width):
        raise ValueError(
            f"mult_arity must be an int or a list with one entry per layer ({len(width)}), got {mult_arity!r}"
        )
    arities = []
    for position, (entry, (_, n_mult)) in enumerate(zip(mult_arity, width)):
        row = [entry] * n_mult if isinstance(entry, int) else list(entry)
        if len(row) != n_mult or any(not isinstance(a, int) or a < 2 for a in row):
            raise ValueError(
                f"mult_arity[{position}] must give {n_mult} arities >= 2 (one per multiplication node), got {entry!r}"
            )
        arities.append(row)
    return arities


class KAN(nn.Module):
    """A Kolmogorov-Arnold Network: ``KAN(width=[2, 5, 1], grid=5, k=3, seed=0)``.

    Maps ``(batch, width[0])`` to ``(batch, width[-1])``. ``seed`` drives a private
    ``torch.Generator``: building a model never touches the global random state, and the
    same seed gives the same parameters. The remaining arguments are passed to every
    ``KANLinear`` (see there). ``dtype`` / ``device`` are the usual factory arguments.
    """

    def __init__(
        self,
        width: Sequence,
        grid: int = 5,
        k: int = 3,
        *,
        mult_arity: int | Sequence = 2,
        seed: int = 0,
        grid_range: Sequence[float] = (-1.0, 1.0),
        grid_eps: float = 0.02,
        base_fun: str | Callable | None = "silu",
        noise_scale: float = 0.3,
        scale_base_mu: float = 0.0,
        scale_base_sigma: float = 1.0,
        scale_sp: float = 1.0,
        sb_trainable: bool = True,
        sp_trainable: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **options,
    ) -> None:
        check_keywords("KAN()", options)
        super().__init__()
        self.width = parse_width(width)
        self.mult_arity = _parse_arity(mult_arity, self.width)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.grid = grid
        self.k = k
        self.grid_range = tuple(float(v) for v in grid_range)
        self._layer_options = {
            "grid": grid,
            "k": k,
            "grid_range": self.grid_range,
            "grid_eps": grid_eps,
            "base_fun": base_fun,
            "noise_scale": noise_scale,
            "scale_base_mu": scale_base_mu,
            "scale_base_sigma": scale_base_sigma,
            "scale_sp": scale_sp,
            "sb_trainable": sb_trainable,
            "sp_trainable": sp_trainable,
        }
        generator = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList(
            KANLinear(
                sum(self.width[l]),
                self.width[l + 1][0] + sum(self.mult_arity[l + 1]),
                generator=generator,
                device=device,
                dtype=dtype,
                grid_update=None,  # fit keeps the grids (the paper's schedule); see kanlab.grid_keeping
                **self._layer_options,
            )
            for l in range(len(self.width) - 1)
        )
        self.register_buffer("sample_input", None)
        # after prune_input: which columns of the full-width input the first layer reads
        self.register_buffer("input_index", None)
        self._n_inputs = self.width_in[0]
        # JSON-serialisable notes that travel with the model through save / load (the
        # command line keeps its column names and scalings here)
        self.metadata: dict = {}

    # ------------------------------------------------------------------ description
    @property
    def depth(self) -> int:
        """Number of layers L."""
        return len(self.layers)

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].coef.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].coef.device

    @property
    def n_inputs(self) -> int:
        """Columns the model takes: ``width[0]``, or the original width after ``prune_input``."""
        return self._n_inputs

    @property
    def width_in(self) -> list[int]:
        """Nodes per layer (sum + multiplication)."""
        return [sum(pair) for pair in self.width]

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments; ``KAN(**config)`` rebuilds the architecture."""
        options = dict(self._layer_options)
        name, _ = resolve_base_fun(options["base_fun"])
        options["base_fun"] = name
        options["grid_range"] = list(self.grid_range)
        options["grid"] = self.grid
        return {
            "width": [list(pair) for pair in self.width],
            "mult_arity": [list(row) for row in self.mult_arity],
            "seed": self.seed,
            "dtype": str(self.dtype).removeprefix("torch."),
            **options,
        }

    def symbolic_names(self) -> list[list]:
        """``[[l, i, j, function name], ...]`` for every symbolic edge (what ``save`` records)."""
        return [
            [l, i, j, function.name]
            for l, layer in enumerate(self.layers)
            for (j, i), function in sorted(layer.symbolic_edges.items())
        ]

    def extra_repr(self) -> str:
        width = [w[0] if not w[1] else list(w) for w in self.width]
        return f"width={width}, grid={self.grid}, k={self.k}"

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(f"x must be 2-D (batch, {self._n_inputs}), got shape {tuple(x.shape)}")
        if x.shape[1] != self._n_inputs:
            raise ValueError(f"x must have {self._n_inputs} features (columns), got shape {tuple(x.shape)}")

    def _select_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The columns the first layer reads (all of them unless inputs were pruned)."""
        return x if self.input_index is None else x.index_select(1, self.input_index)

    def _combine(self, y: torch.Tensor, l: int) -> torch.Tensor:
        """Turn the subnode outputs feeding layer ``l`` into its node values (products for mult nodes)."""
        n_sum, n_mult = self.width[l]
        if not n_mult:
            return y
        arities = self.mult_arity[l]
        if len(set(arities)) == 1:
            products = y[:, n_sum:].reshape(y.shape[0], n_mult, arities[0]).prod(-1)
        else:
            starts = [n_sum + sum(arities[:m]) for m in range(n_mult)]
            products = torch.stack([y[:, s : s + a].prod(-1) for s, a in zip(starts, arities)], dim=1)
        return torch.cat([y[:, :n_sum], products], dim=1)

    def forward(self, x: torch.Tensor, edge_norms: bool = False):
        """``(batch, n_inputs)`` to ``(batch, n_outputs)``; with ``edge_norms`` also every layer's
        per-edge ``mean |phi|`` (``forward_with_edge_norms``; through ``DistributedDataParallel``
        this is how training asks for them)."""
        if edge_norms:
            return self.forward_with_edge_norms(x)
        self._check_input(x)
        x = self._select_inputs(x)
        if self._fuses(x, edge_norms=False):
            return fused_forward(self.layers, x, edge_norms=False)[0]
        for l, layer in enumerate(self.layers):
            x = self._combine(layer(x), l + 1)
        return x

    def _fuses(self, x: torch.Tensor, edge_norms: bool) -> bool:
        """Whether the whole network runs as one node of the compiled kernel (``fused``): no
        multiplication nodes, and every layer on its fused compiled layer."""
        if any(n_mult for _, n_mult in self.width):
            return False
        self.layers[0]._check_input(x)
        return fusable(self.layers, x, edge_norms)

    def forward_with_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Output and the input of every layer ``[(batch, width_in[l]) for l in range(L)]``."""
        self._check_input(x)
        x = self._select_inputs(x)
        inputs = []
        for l, layer in enumerate(self.layers):
            inputs.append(x)
            x = self._combine(layer(x), l + 1)
        return x, inputs

    def forward_with_edge_norms(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Output and every layer's per-edge ``mean |phi|`` ``(out, in)`` (for the regulariser)."""
        self._check_input(x)
        x = self._select_inputs(x)
        if self._fuses(x, edge_norms=True):
            return fused_forward(self.layers, x, edge_norms=True)
        norms = []
        for l, layer in enumerate(self.layers):
            y, edge_norm = layer.forward_with_edge_norms(x)
            norms.append(edge_norm)
            x = self._combine(y, l + 1)
        return x, norms

    def layer_inputs(self, x: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Inputs of every layer on ``x`` (default: the kept training sample), without gradients."""
        x = self._sample_or(x)
        with torch.no_grad():
            return self.forward_with_inputs(x)[1]

    def edge_activations(self, x: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per layer, the per-edge values ``(batch, out, in)`` on ``x`` (default: kept sample)."""
        inputs = self.layer_inputs(x)
        with torch.no_grad():
            return [layer.edge_activations(h) for layer, h in zip(self.layers, inputs)]

    def _sample_or(self, x: torch.Tensor | None) -> torch.Tensor:
        if x is not None:
            return x
        if self.sample_input is None:
            raise ValueError("no samples: pass x, or fit the model first (it keeps a sample of its training inputs)")
        return self.sample_input

    def remember_inputs(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Keep up to ``SAMPLE_LIMIT`` rows of ``x`` (a random subset if more) as ``sample_input``."""
        x = x.detach()
        if x.shape[0] > SAMPLE_LIMIT:
            rows = torch.randperm(x.shape[0], generator=generator)[:SAMPLE_LIMIT].sort().values
            x = x[rows.to(x.device)]
        self.sample_input = x.clone()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # sample_input and input_index have data-dependent shapes: adopt whatever the checkpoint holds.
        for name in ("sample_input", "input_index"):
            if prefix + name in state_dict:
                setattr(self, name, state_dict[prefix + name].detach().clone().to(self.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ grids
    @torch.no_grad()
    def update_grid(self, x: torch.Tensor | None = None) -> None:
        """Adapt every layer's knots to the inputs it sees on ``x`` (default: kept sample), in place.

        Layers are updated first to last, each from its inputs under the already updated
        layers before it; each layer keeps its function on those inputs (least squares).
        """
        x = self._sample_or(x)
        self._check_input(x)
        x = self._select_inputs(x)
        for l, layer in enumerate(self.layers):
            layer.update_grid(x)
            x = self._combine(layer(x), l + 1)

    update_grid_from_samples = update_grid

    @torch.no_grad()
    def refine(self, new_grid: int, x: torch.Tensor | None = None) -> "KAN":
        """Grid extension: a new model with ``new_grid`` intervals computing the same function.

        Each layer is fit by least squares to the old layer on its inputs from ``x`` (default:
        the kept training sample; with neither, evenly spaced points over the current knots).
        """
        if x is None:
            x = self.sample_input
        new = copy.deepcopy(self)
        inputs = self.layer_inputs(x) if x is not None else [None] * self.depth
        for l, h in enumerate(inputs):
            new.layers[l] = self.layers[l].refined(new_grid, h)
        new.grid = new_grid
        return new

    # ------------------------------------------------------------------ operations
    def fit(self, dataset, **options) -> dict:  # keywords checked by kanlab.train.fit
        """Train in place; see ``kanlab.train.fit`` for the options. Returns the history."""
        from .train import fit

        return fit(self, dataset, **options)

    def save(self, path) -> None:
        """Write the model to ``path`` (safetensors + JSON config), atomically."""
        from .io import save

        save(self, path)

    @classmethod
    def load(cls, path, *, base_fun: Callable | None = None, library=None) -> "KAN":
        """Read a model written by ``save``; pass ``base_fun`` / ``library`` for custom functions."""
        from .io import load

        return load(path, base_fun=base_fun, library=library)

    def copy(self) -> "KAN":
        return copy.deepcopy(self)

    # ------------------------------------------------------------------ reading a model
    def attribute(self, l: int | None = None, i: int | None = None, x: torch.Tensor | None = None):
        """KAN 2.0 attribution scores of the outputs or, as pykan's ``attribute(l, i)``, of node
        ``i`` of node layer ``l``; see ``kanlab.prune.attribute``."""
        from .prune import attribute

        if (l is None) != (i is None):
            raise ValueError("attribute takes both l and i (one node) or neither (the outputs)")
        return attribute(self, x, None if l is None else (l, i))

    # ------------------------------------------------------------------ structure (KAN 2.0)
    def feature_interaction(self, x: torch.Tensor | None = None, mode: str = "add") -> torch.Tensor:
        """``(d, d)`` normalised interaction of each pair of inputs; see ``kanlab.structure``."""
        from .structure import feature_interaction

        return feature_interaction(self, x, mode)

    def detect_separability(self, x: torch.Tensor | None = None, mode: str = "add", threshold: float = 1e-2):
        """Groups of inputs the model adds (``mode="add"``) or multiplies; see ``kanlab.structure``."""
        from .structure import detect_separability

        return detect_separability(self, x, mode, threshold)

    def test_separability(self, x: torch.Tensor | None = None, groups=(), mode: str = "add",
                          threshold: float = 1e-2) -> bool:
        from .structure import test_separability

        return test_separability(self, x, groups, mode, threshold)

    def test_symmetry(self, x: torch.Tensor | None = None, group=(), threshold: float = 1e-3) -> bool:
        from .structure import test_symmetry

        return test_symmetry(self, x, group, threshold)

    def tree(self, x: torch.Tensor | None = None, threshold: float = 1e-2):
        """The model's modular tree (sums, products, compositions); see ``kanlab.structure.tree``."""
        from .structure import tree

        return tree(self, x, threshold)

    def plot_tree(self, path=None, x: torch.Tensor | None = None, names=None, threshold: float = 1e-2):
        from .structure import plot_tree, tree

        return plot_tree(tree(self, x, threshold), path, names)

    def feature_score(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Attribution score of each input feature ``(n_inputs,)``."""
        from .prune import feature_score

        return feature_score(self, x)

    def edge_scores(self, x: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The paper's per-edge ``|phi|_1`` per layer ``(out, in)``."""
        from .prune import edge_scores

        return edge_scores(self, x)

    def prune(self, node_th: float = 1e-2, edge_th: float = 3e-2, **options) -> "KAN":
        """A pruned copy (nodes, then edges); see ``kanlab.prune.prune``."""
        from .prune import prune

        reject_pykan_keywords("prune()", options)
        return prune(self, node_th, edge_th, **options)

    def prune_node(self, threshold: float = 1e-2, **options) -> "KAN":
        from .prune import prune_node

        reject_pykan_keywords("prune_node()", options)
        return prune_node(self, threshold, **options)

    def prune_edge(self, threshold: float = 3e-2, **options) -> "KAN":
        """Mask, in place as pykan does, every edge whose attribution score is below
        ``threshold``; returns the model itself (``kanlab.prune.prune_edge`` gives a masked copy)."""
        from .prune import prune_edge

        reject_pykan_keywords("prune_edge()", options)
        pruned = prune_edge(self, threshold, **options)
        with torch.no_grad():
            for layer, new in zip(self.layers, pruned.layers):
                layer.mask.copy_(new.mask)
        return self

    def prune_input(self, threshold: float = 1e-2, **options) -> "KAN":
        from .prune import prune_input

        reject_pykan_keywords("prune_input()", options)
        return prune_input(self, threshold, **options)

    def remove_edge(self, l: int, i: int, j: int) -> None:
        from .prune import remove_edge

        remove_edge(self, l, i, j)

    def remove_node(self, l: int, i: int) -> None:
        from .prune import remove_node

        remove_node(self, l, i)

    # ------------------------------------------------------------------ symbolic
    def suggest_symbolic(self, l: int, i: int, j: int, lib=None, topk: int = 5, **options):
        """Best library functions for edge ``(l, i, j)``; see ``kanlab.symbolic``."""
        from .symbolic import suggest_symbolic

        reject_pykan_keywords("suggest_symbolic()", options)
        return suggest_symbolic(self, l, i, j, lib, topk, **options)

    def fix_symbolic(self, l: int, i: int, j: int, name, fit_params: bool = True, **options):
        from .symbolic import fix_symbolic

        reject_pykan_keywords("fix_symbolic()", options)
        return fix_symbolic(self, l, i, j, name, fit_params, **options)

    def unfix_symbolic(self, l: int, i: int, j: int, **options) -> None:
        from .symbolic import unfix_symbolic

        unfix_symbolic(self, l, i, j, **options)

    def unfix_symbolic_all(self, **options) -> None:
        """Turn every symbolic edge back into a spline fit to it (for fine-tuning)."""
        from .symbolic import unfix_symbolic_all

        unfix_symbolic_all(self, **options)

    def perturb(self, *args, **options):
        """pykan's ``perturb`` (noise on the spline coefficients) is not in kanlab: this raises
        an error that says so. kanlab's ``unfix_symbolic_all`` turns symbolic edges back
        into splines."""
        raise NotImplementedError(
            "kanlab has no perturb(): pykan's perturb adds noise to the spline coefficients, which kanlab does "
            "not implement. To turn symbolic edges back into trainable splines call model.unfix_symbolic_all().")

    def auto_symbolic(self, lib=None, r2_threshold: float = 0.0, weight_simple: float = 0.8, **options):
        from .symbolic import auto_symbolic

        reject_pykan_keywords("auto_symbolic()", options)
        return auto_symbolic(self, lib, r2_threshold, weight_simple, **options)

    def symbolic_formula(self, var_names=None, round_digits: int | None = None, simplify: bool = False, **options):
        """One sympy expression per output; see ``kanlab.formula.symbolic_formula``."""
        from .formula import symbolic_formula

        reject_pykan_keywords("symbolic_formula()", options)
        return symbolic_formula(self, var_names, round_digits, simplify, **options)

    # ------------------------------------------------------------------ growing and drawing
    def expand_width(self, l: int, n_added: int, **options) -> "KAN":
        """A copy with ``n_added`` new nodes in hidden node layer ``l``; see ``kanlab.compile``."""
        from .compile import expand_width

        return expand_width(self, l, n_added, **options)

    def expand_depth(self, **options) -> "KAN":
        """A copy with one more layer (identity on every output); see ``kanlab.compile``."""
        from .compile import expand_depth

        return expand_depth(self, **options)

    def plot(self, path=None, **options):
        """Draw the network as in the paper; returns the matplotlib Figure (see ``kanlab.plot.draw``)."""
        from .plot import draw

        return draw(self, path=path, **options)
