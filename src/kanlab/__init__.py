"""kanlab: Kolmogorov-Arnold Networks, exact and fast, as ordinary PyTorch modules.

The public API: ``KAN`` (a network), ``KANLinear`` (a layer, drop-in for ``nn.Linear``),
``KANConv1d`` / ``KANConv2d`` (drop-ins for ``nn.Conv1d`` / ``nn.Conv2d``), ``discover``
(data to formula), ``backtrack``,
``create_dataset``, ``fit``, ``save`` / ``load``, the operations that read and simplify a
trained model (``prune``, ``auto_symbolic``, ``symbolic_formula``, ``from_formula``, ...)
and the pure spline functions in ``kanlab.splines``. Pictures are in ``kanlab.plot``, formula
export in ``kanlab.export``. Heavy optional dependencies are imported only where used.
"""

from . import native, optim, splines, structure
from .backtrack import backtrack
from .compile import expand_depth, expand_width, from_formula
from .conv import KANConv1d, KANConv2d
from .datasets import create_dataset, paper_function
from .discover import Discovery, discover
from .io import ModelFileError, load, save
from .layer import KANLayer, KANLinear
from .formula import symbolic_formula
from .functions import Library, SymbolicFunction, default_library
from .model import KAN
from .prune import attribute, feature_score, prune, prune_edge, prune_input, prune_node
from .symbolic import auto_symbolic, fix_symbolic, suggest_symbolic, unfix_symbolic
from .train import fit, regularization

__version__ = "0.1.0"

__all__ = [
    "KAN",
    "KANLinear",
    "KANLayer",
    "KANConv1d",
    "KANConv2d",
    "backtrack",
    "create_dataset",
    "discover",
    "Discovery",
    "paper_function",
    "fit",
    "regularization",
    "save",
    "load",
    "ModelFileError",
    "splines",
    "native",
    "structure",
    "prune",
    "prune_node",
    "prune_edge",
    "prune_input",
    "attribute",
    "feature_score",
    "suggest_symbolic",
    "fix_symbolic",
    "unfix_symbolic",
    "auto_symbolic",
    "symbolic_formula",
    "from_formula",
    "expand_width",
    "expand_depth",
    "Library",
    "SymbolicFunction",
    "default_library",
    "__version__",
]
