"""The paper's experiments, one command each: ``kanlab reproduce NAME [--quick] [--out DIR]``.

In Python: ``kanlab.experiments.NAME(quick=False, out=None, seed=0)`` returns a ``Result``
(its ``markdown()`` is the table) and, given ``out``, writes ``NAME.md``, ``NAME.csv`` and
``NAME.png`` there. ``quick=True`` is a small smoke run (seconds); full runs take minutes to
hours and are benchmarks. Every MLP baseline gets the same data, optimizer and step budget.

- ``scaling``: neural scaling laws (paper Fig 3.1)
- ``grid_extension``: grid extension and the interpolation threshold (Fig 2.3)
- ``special``: special functions (Table 1)
- ``feynman``: Feynman equations, pruning and formula recovery (Table 2)
- ``poisson``: a Poisson PDE as a PINN (section 3.4)
- ``continual``: continual learning without forgetting (section 3.5)
- ``symbolic``: supervised toys with known formulas (section 4.1, KAN 2.0)
- ``noise``: label noise and overfitting, KANs vs MLPs (the critics' claim)
"""

from __future__ import annotations

import importlib

from .common import Result

__all__ = ["NAMES", "run", "Result", "scaling", "grid_extension", "special", "feynman", "poisson", "continual",
           "symbolic", "noise"]

NAMES = ("scaling", "grid_extension", "special", "feynman", "poisson", "continual", "symbolic", "noise")


def run(name: str, quick: bool = False, out=None, seed: int = 0) -> Result:
    """Run the experiment ``name`` (one of ``NAMES``); write its files into ``out`` if given."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {', '.join(NAMES)}; got {name!r}")
    module = importlib.import_module(f"{__name__}._{name}")
    result = module.run(quick=quick, seed=seed)
    if out is not None:
        result.write(out)
    return result


def scaling(quick: bool = False, out=None, seed: int = 0) -> Result:
    return run("scaling", quick, out, seed)


def grid_extension(quick: bool = False, out=None, seed: int = 0) -> Result:
    return run("grid_extension", quick, out, seed)


def special(quick: bool = False, out=None, seed: int = 0) -> Result:
    return run("special", quick, out, seed)


def feynman(quick: bool = False, out=None, seed: int = 0) -> Result:
    return run("feynman", quick, out, seed)


def poisson(quick: bool = False, out=None, seed: int = 0) -> Result:
    return run("poisson", quick, out, seed)


def continual(quick: bool = False, out=None, seed: int = 0) -> Result:
    return run("continual", quick, out, seed)


def symbolic(quick: bool = False, out=None, seed: int = 0) -> Result:
    return run("symbolic", quick, out, seed)


def noise(quick: bool = False, out=None, seed: int = 0) -> Result:
    return run("noise", quick, out, seed)
