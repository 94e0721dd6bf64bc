"""What every reproduction shares: the result it writes, MLP baselines trained with the same
care as the KANs, and small numeric helpers."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..optim import LBFGS, adam

__all__ = ["Result", "train_mlp", "mlp_parameters", "kan_parameters", "rmse", "Timer", "BestOnValidation"]


@dataclass
class Result:
    """A reproduction's table (``columns`` x ``rows``), notes, and the picture drawer."""

    name: str
    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    draw: Callable | None = None  # draw(figure) fills a matplotlib Figure
    seconds: float = 0.0

    def markdown(self) -> str:
        def text(value) -> str:
            if isinstance(value, float):
                return "" if math.isnan(value) else f"{value:.3g}"
            return str(value)

        lines = [f"## {self.title}", "", "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(text(v) for v in row) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes] + [f"- run time: {self.seconds:.1f} s"]
        return "\n".join(lines) + "\n"

    def write(self, out: Path | str) -> dict[str, Path]:
        """Write ``NAME.md``, ``NAME.csv`` and ``NAME.png`` into ``out`` (created if needed)."""
        from ..io import write_atomically

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"table": out / f"{self.name}.md", "csv": out / f"{self.name}.csv"}
        write_atomically(paths["table"], lambda s: s.write(self.markdown().encode()))
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        write_atomically(paths["csv"], lambda s: s.write(buffer.getvalue().encode()))
        if self.draw is not None:
            from matplotlib.figure import Figure

            figure = Figure(figsize=(9, 4.5), dpi=110)
            self.draw(figure)
            figure.tight_layout()
            paths["plot"] = out / f"{self.name}.png"
            write_atomically(paths["plot"], lambda s: figure.savefig(s, format="png"))
        return paths


class Timer:
    def __enter__(self):
        self.begin = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.begin


def rmse(pred: torch.Tensor, label: torch.Tensor) -> float:
    return math.sqrt(torch.mean((pred - label) ** 2).item())


def proven_equal(found, truth, substitutions=None) -> bool:
    """Whether sympy proves ``found == truth``, after writing auxiliary symbols in raw ones."""
    import sympy

    difference = found - truth
    if substitutions:
        difference = difference.subs(substitutions)
    try:
        return sympy.simplify(difference) == 0
    except Exception:  # noqa: BLE001 - undecided by sympy: the numeric check stands
        return False


def formula_verdict(found, symbols, x: torch.Tensor, y: torch.Tensor, truth, *, digits: int,
                    substitutions=None) -> str:
    """How well the sympy formula ``found`` (in ``symbols``) recovers ``truth``, checked on
    fresh points ``x`` ``(N, len(symbols))`` with labels ``y`` ``(N, 1)``.

    "no (relative RMSE r)" when its RMSE over the labels' spread exceeds 1e-3, "exact" when
    sympy proves it (rounded to ``digits``) equal to ``truth``, else "numeric (r)".
    """
    import numpy as np
    import sympy

    from ..formula import round_formula

    by_name = {s.name: s for s in symbols}
    found = found.subs({s: by_name[s.name] for s in found.free_symbols if s.name in by_name})
    fn = sympy.lambdify(symbols, found, modules=["numpy", "scipy"])
    with np.errstate(all="ignore"):  # a wrong formula may leave its domain: the RMSE says so, not a warning
        values = torch.as_tensor(fn(*[x[:, i].numpy() for i in range(len(symbols))]), dtype=torch.float64)
    values = values.reshape(-1, 1).expand_as(y)  # a constant formula gives one value
    relative = rmse(values, y) / max(y.std().item(), 1e-12)
    if not math.isfinite(relative) or relative > 1e-3:
        return f"no (relative RMSE {relative:.1e})"
    if proven_equal(round_formula(found, digits), truth, substitutions):
        return "exact"
    return f"numeric ({relative:.0e})"


def kan_parameters(model) -> int:
    """Trainable numbers of a KAN's active edges: G + k coefficients and 2 scales each (the
    paper's count), plus symbolic edges' 4 affine numbers."""
    total = 0
    for layer in model.layers:
        active = int(layer.mask.sum().item())
        symbolic = len(layer.symbolic_edges)
        total += (active - symbolic) * (layer.n_basis + 2) + 4 * symbolic
    return total


def mlp_parameters(sizes: Sequence[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def make_mlp(sizes: Sequence[int], activation: str = "silu", seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(seed)
    act = {"silu": torch.nn.SiLU, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[activation]
    layers: list[torch.nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), act()]
    return torch.nn.Sequential(*layers[:-1]).to(dtype)


def minimize(parameters: list[torch.Tensor], objective: Callable[[], torch.Tensor], steps: int, *,
             opt: str = "LBFGS", lr: float = 1.0, normalise: bool = False, tolerance: float | None = None,
             after_step: Callable[[int], object] | None = None) -> None:
    """``steps`` optimizer steps on a scalar ``objective()``, for the losses that are not
    (input, label) pairs (PINN residuals, phases of a continual run) and for MLP baselines.

    ``opt`` is "LBFGS" (history 10, strong Wolfe, curvature pairs kept down to y's = 1e-32,
    as ``fit``) or "Adam". ``normalise``
    divides the objective by its first value, as ``fit`` does for LBFGS; ``tolerance``
    replaces both of LBFGS's stopping tolerances (1e-32: never stop early);
    ``after_step(step)`` runs after each step.
    """
    if opt not in ("LBFGS", "Adam"):
        raise ValueError(f"opt must be 'LBFGS' or 'Adam', got {opt!r}")
    if opt == "Adam":
        optimizer = adam(parameters, lr=lr)
    else:
        tolerances = {} if tolerance is None else {"tolerance_grad": tolerance, "tolerance_change": tolerance}
        optimizer = LBFGS(parameters, lr=lr, history_size=10, line_search_fn="strong_wolfe", tolerance_ys=1e-32,
                          **tolerances)
    scale = 1.0
    if normalise:
        with torch.no_grad():
            first = float(objective())
        scale = 1.0 / first if math.isfinite(first) and first > 0 else 1.0

    def closure():
        optimizer.zero_grad()
        loss = objective() * scale
        loss.backward()
        return loss

    for step in range(steps):
        optimizer.step(closure)
        if after_step is not None:
            after_step(step)


def fit_best_of_seeds(width, data: dict, seeds: Sequence[int], fit_options: dict, **kan_options):
    """A KAN trained from each seed in ``seeds``; returns (the one with the lowest final
    training RMSE, its history, its seed). Small KANs have initialisation-dependent local
    minima (a stalled [2, 1, 1] stays stalled through every later refinement), and
    restarting is what a practitioner does; the test set plays no part in the choice."""
    from ..model import KAN

    best = None
    for seed in seeds:
        model = KAN(width, seed=seed, **kan_options)
        history = model.fit(data, **fit_options)
        if best is None or history["train_loss"][-1] < best[1]["train_loss"][-1]:
            best = (model, history, seed)
    return best


def train_mlp(sizes: Sequence[int], data: dict, *, steps: int, opt: str = "LBFGS", lr: float = 1.0,
              activation: str = "silu", seed: int = 0, loss_fn=None, validation=None) -> tuple[torch.nn.Module, float]:
    """An MLP trained with the optimizer and step budget the KAN gets; returns it and its test RMSE.

    LBFGS uses the same settings as ``kanlab.fit`` (history 10, strong Wolfe, up to 20
    iterations a step); the objective is scaled by its first value, as ``fit`` does. With
    ``validation=(X, y)`` the parameters of the step with the lowest validation loss are kept
    (early stopping), as ``BestOnValidation`` does for a KAN.
    """
    x, y = data["train_input"], data["train_label"]
    model = make_mlp(sizes, activation, seed, x.dtype)
    loss_fn = loss_fn or (lambda m: torch.mean((m(x) - y) ** 2))
    keeper = BestOnValidation(*validation) if validation is not None else None
    after_step = (lambda step: keeper(step, model, None)) if keeper is not None else None
    minimize(list(model.parameters()), lambda: loss_fn(model), steps, opt=opt, lr=lr, normalise=opt == "LBFGS",
             tolerance=1e-32, after_step=after_step)
    if keeper is not None:
        keeper.restore(model)
    with torch.no_grad():
        score = rmse(model(data["test_input"]), data["test_label"]) if "test_input" in data else float("nan")
    return model, score


class BestOnValidation:
    """A ``fit`` callback (also used for MLPs): remember the parameters with the lowest
    validation MSE; ``restore`` puts them back (early stopping by best step)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.best, self.state = math.inf, None

    def __call__(self, step, model, history) -> bool:
        with torch.no_grad():
            loss = torch.mean((model(self.x) - self.y) ** 2).item()
        if loss < self.best:
            self.best, self.state = loss, {k: v.detach().clone() for k, v in model.state_dict().items()}
        return False

    def restore(self, model) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)
        self.best, self.state = math.inf, None


def discovered(truth, symbols, target: Callable[[torch.Tensor], torch.Tensor], ranges, *, budget: float, seed: int,
               n: int = 1000) -> tuple[str, str, float, str]:
    """``kanlab.discover`` on ``n`` random points of ``target`` over ``ranges`` (the truth is
    never shown to it); returns (formula, verdict, seconds, how it was found). The verdict is
    "exact" when sympy proves the formula equal to ``truth``, "numeric (r)" when its relative
    RMSE on ``n`` fresh points is below 1e-6, else "no (...)"."""
    import numpy as np
    import sympy

    from ..datasets import create_dataset
    from ..discover import discover

    data = create_dataset(target, n_var=len(symbols), ranges=ranges, train_num=n, test_num=n, seed=seed,
                          dtype=torch.float64)
    result = discover(data["train_input"].numpy(), data["train_label"].numpy(), [s.name for s in symbols],
                      budget=budget, seed=seed, progress=False)
    how = next(c.how for c in result.front if c.formula == result.formula)
    found = result.formula
    by_name = {s.name: s for s in symbols}
    found = found.subs({s: by_name[s.name] for s in found.free_symbols if s.name in by_name})
    fn = sympy.lambdify(symbols, found, modules=["numpy", "scipy"])
    x, y = data["test_input"].numpy(), data["test_label"].numpy()[:, 0]
    with np.errstate(all="ignore"):
        values = np.broadcast_to(np.asarray(fn(*x.T), dtype=np.float64), y.shape)
    relative = float(np.sqrt(np.mean((values - y) ** 2)) / max(np.std(y), 1e-300))
    if not math.isfinite(relative) or relative > 1e-6:
        verdict = f"no (relative RMSE {relative:.1e})"
    elif proven_equal(found, truth):
        verdict = "exact"
    else:
        verdict = f"numeric ({relative:.0e})"
    return str(result.formula), verdict, result.seconds, how
