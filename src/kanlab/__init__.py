"""kanlab: Kolmogorov-Arnold Networks, exact and fast, as ordinary PyTorch modules.

The public API: ``KAN`` (a network), ``KANLinear`` (a layer, drop-in for ``nn.Linear``),
``create_dataset``, ``fit``, ``save`` / ``load`` and the pure spline functions in
``kanlab.splines``. Heavy optional dependencies are imported only where used.
"""

from . import splines
from .datasets import create_dataset, paper_function
from .io import ModelFileError, load, save
from .layer import KANLayer, KANLinear
from .model import KAN
from .train import fit, regularization

__version__ = "0.1.0"

__all__ = [
    "KAN",
    "KANLinear",
    "KANLayer",
    "create_dataset",
    "paper_function",
    "fit",
    "regularization",
    "save",
    "load",
    "ModelFileError",
    "splines",
    "__version__",
]
