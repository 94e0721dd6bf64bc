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


def _entry(name: str):
    def experiment(quick: bool = False, out=None, seed: int = 0) -> Result:
        return run(name, quick, out, seed)

    experiment.__name__ = experiment.__qualname__ = name
    experiment.__doc__ = f"Run the ``{name}`` experiment (see the module docstring); ``run('{name}', ...)``."
    return experiment


scaling = _entry("scaling")
grid_extension = _entry("grid_extension")
special = _entry("special")
feynman = _entry("feynman")
poisson = _entry("poisson")
continual = _entry("continual")
symbolic = _entry("symbolic")
noise = _entry("noise")
