"""Per-column affine scaling between a user's units and a KAN's: ``scaled = (x - offset) / scale``.

Used by the scikit-learn estimators and the command line to put raw features onto the grid
range and targets near unit size, and to write a trained model's formula back in the
original units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AffineScaling", "formula_in_units"]


@dataclass(frozen=True)
class AffineScaling:
    """``scaled = (x - offset) / scale`` column by column; ``offset`` and ``scale`` ``(n_columns,)``."""

    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def to_range(cls, X: np.ndarray, low: float = -1.0, high: float = 1.0) -> "AffineScaling":
        """Maps each column's [min, max] onto [low, high] (a constant column onto the middle)."""
        X = np.asarray(X, dtype=np.float64)
        lo, hi = X.min(axis=0), X.max(axis=0)
        half = (hi - lo) / (high - low)
        scale = np.where(half > 0, half, 1.0)
        return cls(offset=(lo + hi) / 2 - scale * (low + high) / 2, scale=scale)

    @classmethod
    def standard(cls, Y: np.ndarray) -> "AffineScaling":
        """Mean 0 and standard deviation 1 per column (a constant column keeps scale 1)."""
        Y = np.asarray(Y, dtype=np.float64)
        std = Y.std(axis=0)
        return cls(offset=Y.mean(axis=0), scale=np.where(std > 0, std, 1.0))

    def forward(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.offset) / self.scale

    def inverse(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(Z, dtype=np.float64) * self.scale + self.offset

    def to_dict(self) -> dict:
        return {"offset": [float(v) for v in self.offset], "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_dict(cls, data: dict) -> "AffineScaling":
        return cls(offset=np.asarray(data["offset"], dtype=np.float64), scale=np.asarray(data["scale"], dtype=np.float64))


def formula_in_units(model, var_names, x_scaling: AffineScaling, y_scaling: AffineScaling | None = None,
                     round_digits: int | None = 4) -> list:
    """``model``'s formula per output (``kanlab.symbolic_formula``), with the inputs and (if
    given) the outputs in the original units of ``x_scaling`` / ``y_scaling``."""
    import sympy

    from .formula import round_formula, symbolic_formula

    symbols = [sympy.Symbol(str(name)) for name in var_names]
    scaled = [sympy.Dummy(f"s{i}") for i in range(len(symbols))]
    outputs = symbolic_formula(model, scaled)
    back = {s: (x - float(o)) / float(c) for s, x, o, c in zip(scaled, symbols, x_scaling.offset, x_scaling.scale)}
    result = []
    for j, expr in enumerate(outputs):
        expr = expr.subs(back)
        if y_scaling is not None:
            expr = expr * float(y_scaling.scale[j]) + float(y_scaling.offset[j])
        result.append(round_formula(expr, round_digits) if round_digits is not None else expr)
    return result
