"""The README's main job: the paper's workflow on exp(sin(pi x) + y^2).

Train ``KAN([2, 5, 1])`` with sparsification, prune it, extend its grid, snap every edge to
a library function, polish the constants, and print the formula and the test RMSE.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from .datasets import create_dataset, paper_function
from .functions import HELLOKAN_LIBRARY
from .model import KAN

__all__ = ["run_demo", "DemoResult"]


class DemoResult:
    """What the demo produced: the final ``model``, its ``formula`` (sympy), the ``rounded``
    formula, the ``stages`` (name, width, train RMSE, test RMSE, seconds) and written ``files``."""

    def __init__(self, model, formula, rounded, stages, files):
        self.model, self.formula, self.rounded, self.stages, self.files = model, formula, rounded, stages, files

    @property
    def test_rmse(self) -> float:
        return self.stages[-1][3]


def run_demo(
    *,
    steps: int = 50,
    grid: int = 5,
    refine_to: int = 10,
    lamb: float = 3e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    lib: Sequence[str] = HELLOKAN_LIBRARY,
    out_dir: str | Path | None = ".",
    round_digits: int = 4,
    out: Callable[[str], None] = print,
) -> DemoResult:
    """Run the workflow, reporting each stage through ``out``; writes ``kan.png`` and
    ``model.kan`` into ``out_dir`` (nothing when it is None)."""
    function, n_var = paper_function("exp_sin")
    data = create_dataset(function, n_var=n_var, train_num=1000, test_num=1000, seed=seed, dtype=dtype)
    out(f"exp(sin(pi*x_1) + x_2^2): 1000 train / 1000 test points, {dtype}, LBFGS {steps} steps per stage")
    out(f"{'stage':<34} {'width':<14} {'train RMSE':>11} {'test RMSE':>11} {'time (s)':>9}")
    stages = []

    def report(name: str, model: KAN, history: dict | None, seconds: float) -> None:
        width = [w[0] if not w[1] else list(w) for w in model.width]
        if history is None:
            train = _rmse(model, data["train_input"], data["train_label"])
            test = _rmse(model, data["test_input"], data["test_label"])
        else:
            train, test = history["train_loss"][-1], history["test_loss"][-1]
        stages.append((name, width, train, test, seconds))
        out(f"{name:<34} {str(width):<14} {train:>11.3e} {test:>11.3e} {seconds:>9.2f}")

    def timed(action):
        start = time.perf_counter()
        result = action()
        return result, time.perf_counter() - start

    model = KAN([2, 5, 1], grid=grid, k=3, seed=seed, dtype=dtype)
    history, seconds = timed(lambda: model.fit(data, opt="LBFGS", steps=steps, lamb=lamb, progress=False))
    report(f"train, sparsified (lamb={lamb:g})", model, history, seconds)
    model, seconds = timed(model.prune)
    report("prune", model, None, seconds)
    history, seconds = timed(lambda: model.fit(data, opt="LBFGS", steps=steps, progress=False))
    report("train", model, history, seconds)
    model, seconds = timed(lambda: model.refine(refine_to))
    history, more = timed(lambda: model.fit(data, opt="LBFGS", steps=steps, progress=False))
    report(f"refine grid {grid} -> {refine_to}, train", model, history, seconds + more)
    chosen, seconds = timed(lambda: model.auto_symbolic(lib=list(lib)))
    report("auto_symbolic", model, None, seconds)
    for (l, i, j), suggestion in chosen.items():
        out(f"  edge ({l},{i},{j}) -> {suggestion.name:<8} R^2 = {suggestion.r2:.6f}")
    history, seconds = timed(lambda: model.fit(data, opt="LBFGS", steps=steps, progress=False))
    report("train the symbolic constants", model, history, seconds)
    formula = model.symbolic_formula()[0]
    rounded = model.symbolic_formula(round_digits=round_digits)[0]
    out(f"formula ({round_digits} digits): {rounded}")
    out(f"final test RMSE: {stages[-1][3]:.3e}")
    files = []
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save(out_dir / "model.kan")
        files.append(out_dir / "model.kan")
        try:
            model.plot(out_dir / "kan.png", in_vars=["x_1", "x_2"], out_vars=[str(rounded)])
            files.append(out_dir / "kan.png")
        except ImportError as error:
            out(f"(no picture: {error})")
        out("wrote " + ", ".join(str(f) for f in files))
    return DemoResult(model, formula, rounded, stages, files)


@torch.no_grad()
def _rmse(model: KAN, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((model(x) - y) ** 2)))
