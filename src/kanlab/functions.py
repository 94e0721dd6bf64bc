"""The symbolic function library, and the fit of ``c * f(a * x + b) + d`` to one edge's samples.

A library entry is a name, a sympy form in one variable and a complexity. The torch and
numpy forms are derived from the sympy form by ``sympy.lambdify``; nothing is written twice.
Functions with a singularity or a restricted domain carry a declarative ``domain``; the
guarded torch form first moves the argument into that domain (away from a pole, inside the
open unit interval, ...), so training and evaluation never see NaN or inf. The sympy form
stays the exact function: formulas are written with it.

``Library`` is an ordinary object (``default_library()`` returns a fresh one): register your
own entries on it, e.g. a Bessel function, with no global state and no ``exec``.

sympy is imported only when an entry's form is first needed, so importing kanlab stays light.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "SymbolicFunction",
    "Library",
    "default_library",
    "AffineFit",
    "fit_affine",
    "HELLOKAN_LIBRARY",
    "DOMAINS",
]

#: Guard kinds: how the torch form moves an argument into the function's domain.
DOMAINS = ("real", "nonzero", "positive", "nonnegative", "open_unit", "tan", "exp")

#: Distance kept from a pole (1/x, log, ...) or from the ends of (-1, 1) (arcsin, arctanh).
POLE_EPS = 1e-6
#: Largest argument of exp in the guarded form (exp(50) ~ 5e21 is finite in float32).
EXP_MAX = 50.0

#: The 10-function library of pykan's "hellokan" tutorial.
HELLOKAN_LIBRARY = ("x", "x^2", "x^3", "x^4", "exp", "log", "sqrt", "tanh", "sin", "abs")


def _guard(z: torch.Tensor, domain: str) -> torch.Tensor:
    """Move ``z`` into ``domain`` so the function is finite there, with finite gradients."""
    if domain in ("real", "tan"):  # tan guards its denominator instead
        return z
    if domain == "nonzero":
        return torch.copysign(z.abs().clamp(min=POLE_EPS), z)
    if domain == "positive":
        return z.clamp(min=POLE_EPS)
    if domain == "nonnegative":
        # sqrt-like: exact at 0 up to sqrt(tiny); the clamp keeps the gradient finite.
        return z.clamp(min=math.sqrt(torch.finfo(z.dtype).tiny))
    if domain == "open_unit":
        return z.clamp(-1.0 + POLE_EPS, 1.0 - POLE_EPS)
    if domain == "exp":
        return z.clamp(max=EXP_MAX)
    raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")


@dataclass(eq=False)
class SymbolicFunction:
    """One library entry: ``name``, its sympy ``form`` in one variable, and its ``complexity``.

    ``form`` is a sympy expression in one symbol, or a callable taking a sympy symbol and
    returning one (so that sympy is imported only when needed). ``domain`` names the guard
    (see ``DOMAINS``). ``parity`` ("odd" / "even") and ``period`` / ``period_sign``
    (``f(z + period) = period_sign * f(z)``) let a fit be written in a canonical form (a > 0,
    b in the smallest range); ``exponential`` (``f(z + b) = e^b f(z)``) folds the shift into
    the scale (b = 0), which keeps ``c e^b`` from splitting into a huge and a tiny factor.
    ``step`` marks a function constant on z < 0 and on z > 0 (a jump at 0, as sgn): its
    breakpoint is found exactly, by one pass over each edge's sorted samples, instead of by
    the grid search, whose R^2 is flat between samples.
    ``torch_fn`` / ``numpy_fn`` override the lambdified forms for functions that sympy cannot
    translate (for example a Bessel function).
    """

    name: str
    form: Any
    complexity: float
    domain: str = "real"
    parity: str | None = None
    period: float | None = None
    period_sign: int = 1
    exponential: bool = False
    step: bool = False
    torch_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    numpy_fn: Callable | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if not (isinstance(self.complexity, (int, float)) and self.complexity >= 0):
            raise ValueError(f"complexity must be a number >= 0, got {self.complexity!r}")
        if self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {self.domain!r}")
        if self.parity not in (None, "odd", "even"):
            raise ValueError(f"parity must be None, 'odd' or 'even', got {self.parity!r}")
        if self.torch_fn is not None:
            self._warn_if_not_differentiable()

    def _warn_if_not_differentiable(self) -> None:
        """A ``torch_fn`` without autograd (``torch.special.bessel_j0`` is one) snaps fine, but
        the affine parameters of its edges then get no gradient and silently stop training."""
        probe = torch.linspace(0.1, 0.9, 3, dtype=torch.float64, requires_grad=True)
        try:
            differentiable = bool(getattr(self.torch_fn(probe), "requires_grad", False))
        except Exception:  # noqa: BLE001 - a function undefined at the probe points is not ours to judge
            return
        if not differentiable:
            logger.warning("torch_fn of %r has no gradient (its result does not require grad): edges snapped "
                           "to it will not train their (a, b, c, d); wrap it in a torch.autograd.Function", self.name)

    # -------------------------------------------------------------- derived forms
    def sympy(self, variable=None):
        """The exact sympy form, in ``variable`` (default: the symbol ``x``)."""
        import sympy

        if "expr" not in self._cache:
            symbol = sympy.Symbol("x", real=True)
            expr = self.form(symbol) if callable(self.form) and not isinstance(self.form, sympy.Basic) else self.form
            expr = sympy.sympify(expr) if not isinstance(expr, sympy.Basic) else expr
            free = expr.free_symbols
            if len(free) > 1:
                raise ValueError(f"form of {self.name!r} must have one variable, got {sorted(map(str, free))}")
            if free:
                expr = expr.xreplace({next(iter(free)): symbol})
            self._cache["expr"] = expr
            self._cache["symbol"] = symbol
        expr = self._cache["expr"]
        return expr if variable is None else expr.xreplace({self._cache["symbol"]: variable})

    def _lambdified(self, modules: str) -> Callable:
        key = "lambda_" + modules
        if key not in self._cache:
            import sympy

            expr = self.sympy()
            self._cache[key] = sympy.lambdify(self._cache["symbol"], expr, modules=modules)
        return self._cache[key]

    def torch(self, z: torch.Tensor) -> torch.Tensor:
        """The guarded torch form: finite values and gradients on every finite input."""
        z = _guard(z, self.domain)
        if self.domain == "tan":
            return torch.sin(z) / torch.copysign(torch.cos(z).abs().clamp(min=POLE_EPS), torch.cos(z))
        value = self.torch_fn(z) if self.torch_fn is not None else self._lambdified("torch")(z)
        if not isinstance(value, torch.Tensor) or value.shape != z.shape:
            value = z * 0.0 + value  # constants such as the zero function (zero gradient, same graph)
        return value

    def numpy(self, z):
        """The exact numpy form (NaN or inf where the function is undefined)."""
        import numpy as np

        value = self.numpy_fn(z) if self.numpy_fn is not None else self._lambdified("numpy")(z)
        return np.zeros_like(z, dtype=float) + value

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}  # lambdified code is rebuilt on demand, never pickled
        return state

    def __reduce__(self):
        if _BUILTIN_NAMES.get(self.name) == self.complexity and self.form is _builtin_form(self.name):
            return (builtin_function, (self.name,))
        return super().__reduce__()

    def canonical(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> tuple:
        """The same function ``c f(a x + b) + d`` written with ``a >= 0`` and the smallest ``|b|``.

        Uses the entry's parity and period (entries without them are returned unchanged);
        the identity is written with ``a = 1, b = 0``, an exponential with ``b = 0`` (``c e^b``
        formed as ``sign(c) e^(log|c| + b)``, so that neither factor overflows alone).
        """
        if self.is_identity:
            return torch.ones_like(a), torch.zeros_like(b), c * a, c * b + d
        if self.exponential:
            return a, torch.zeros_like(b), torch.sign(c) * torch.exp(torch.log(c.abs()) + b), d
        if self.parity is not None:
            flip = a < 0
            a, b = torch.where(flip, -a, a), torch.where(flip, -b, b)
            if self.parity == "odd":
                c = torch.where(flip, -c, c)
        if self.period is not None:
            p = self.period
            turns = torch.round(b / p)
            b = b - turns * p
            if self.period_sign == -1:
                c = torch.where(torch.remainder(turns, 2) == 1, -c, c)
        return a, b, c, d

    @property
    def is_identity(self) -> bool:
        """Whether the entry is ``f(x) = x`` (its a, b are then redundant with c, d)."""
        if "identity" not in self._cache:
            expr = self.sympy()
            self._cache["identity"] = expr == self._cache["symbol"]
        return self._cache["identity"]


def _builtin_entries() -> list[SymbolicFunction]:
    def power(n):
        return lambda x: x**n

    def call(name):
        return lambda x: getattr(__import__("sympy"), name)(x)

    pi = math.pi
    return [
        SymbolicFunction("x", power(1), 1, parity="odd"),
        SymbolicFunction("x^2", power(2), 2, parity="even"),
        SymbolicFunction("x^3", power(3), 3, parity="odd"),
        SymbolicFunction("x^4", power(4), 3, parity="even"),
        SymbolicFunction("x^5", power(5), 3, parity="odd"),
        SymbolicFunction("1/x", power(-1), 2, domain="nonzero", parity="odd"),
        SymbolicFunction("1/x^2", power(-2), 2, domain="nonzero", parity="even"),
        SymbolicFunction("1/x^3", power(-3), 3, domain="nonzero", parity="odd"),
        SymbolicFunction("sqrt", call("sqrt"), 2, domain="nonnegative"),
        SymbolicFunction("x^0.5", call("sqrt"), 2, domain="nonnegative"),
        SymbolicFunction("x^1.5", lambda x: x ** __import__("sympy").Rational(3, 2), 4, domain="nonnegative"),
        SymbolicFunction("1/sqrt", lambda x: 1 / __import__("sympy").sqrt(x), 3, domain="positive"),
        SymbolicFunction("exp", call("exp"), 2, domain="exp", exponential=True),
        SymbolicFunction("log", call("log"), 2, domain="positive"),
        SymbolicFunction("abs", call("Abs"), 3, parity="even"),
        SymbolicFunction("sin", call("sin"), 2, parity="odd", period=pi, period_sign=-1),
        SymbolicFunction("cos", call("cos"), 2, parity="even", period=pi, period_sign=-1),
        SymbolicFunction("tan", call("tan"), 3, domain="tan", parity="odd", period=pi),
        SymbolicFunction("tanh", call("tanh"), 3, parity="odd"),
        SymbolicFunction("sgn", call("sign"), 3, parity="odd", step=True),
        SymbolicFunction("arcsin", call("asin"), 4, domain="open_unit", parity="odd"),
        SymbolicFunction("arccos", call("acos"), 4, domain="open_unit"),
        SymbolicFunction("arctan", call("atan"), 4, parity="odd"),
        SymbolicFunction("arctanh", call("atanh"), 4, domain="open_unit", parity="odd"),
        SymbolicFunction("gaussian", lambda x: __import__("sympy").exp(-(x**2)), 3, parity="even"),
        SymbolicFunction("0", lambda x: __import__("sympy").Integer(0), 0),
    ]


_BUILTINS: dict[str, SymbolicFunction] = {entry.name: entry for entry in _builtin_entries()}
_BUILTIN_NAMES = {name: entry.complexity for name, entry in _BUILTINS.items()}


def _builtin_form(name: str):
    entry = _BUILTINS.get(name)
    return entry.form if entry is not None else None


def builtin_function(name: str) -> SymbolicFunction:
    """A fresh copy of the built-in entry ``name`` (entries are rebuilt by name when unpickled)."""
    if name not in _BUILTINS:
        raise KeyError(f"no built-in function {name!r}; known: {', '.join(_BUILTINS)}")
    entry = _BUILTINS[name]
    return SymbolicFunction(**{k: v for k, v in entry.__dict__.items() if k != "_cache"})


class Library:
    """An ordered set of ``SymbolicFunction`` entries, looked up by name.

    ``Library()`` is empty; ``default_library()`` holds the built-in entries. ``register``
    adds (or, with ``replace=True``, replaces) an entry; ``subset(names)`` returns a new
    library with only those entries, in that order.
    """

    def __init__(self, entries: Iterable[SymbolicFunction] = ()) -> None:
        self._entries: dict[str, SymbolicFunction] = {}
        for entry in entries:
            self.register(entry)

    def register(self, entry: SymbolicFunction | str, form: Any = None, complexity: float = 2, *, replace=False, **options):
        """Add an entry: a ``SymbolicFunction`` or ``(name, form, complexity, **options)``."""
        if not isinstance(entry, SymbolicFunction):
            entry = SymbolicFunction(entry, form, complexity, **options)
        if entry.name in self._entries and not replace:
            raise ValueError(f"name {entry.name!r} is already in the library; pass replace=True to change it")
        self._entries[entry.name] = entry
        return entry

    def __getitem__(self, name: str) -> SymbolicFunction:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no function {name!r} in the library; known: {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def subset(self, names: Sequence[str] | None) -> "Library":
        """A library of the named entries (all of them for ``None``)."""
        if names is None:
            return Library(self)
        if isinstance(names, str):
            raise TypeError(f"lib must be a list of names, got the string {names!r}")
        return Library(self[name] for name in names)

    def __repr__(self) -> str:
        return f"Library({self.names})"


def default_library() -> Library:
    """A fresh library with the built-in entries (x, x^2, ..., sin, exp, log, gaussian, 0)."""
    return Library(builtin_function(name) for name in _BUILTINS)


# ---------------------------------------------------------------------- fitting


@dataclass
class AffineFit:
    """Best ``c * f(a * x + b) + d`` per (edge, function): tensors ``(edges, functions)``.

    ``r2`` is the coefficient of determination on the samples (0 for a function that is
    constant or undefined on them; 1 for every function when the edge itself is constant).
    ``reason`` holds, per edge, why the fit is degenerate ("" when it is not).
    """

    names: list[str]
    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    d: torch.Tensor
    r2: torch.Tensor
    reason: list[str]

    def params(self, edge: int, function: int) -> tuple[float, float, float, float]:
        return tuple(float(t[edge, function]) for t in (self.a, self.b, self.c, self.d))


def _subsample(x: torch.Tensor, y: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``limit`` samples per edge, evenly spread over each edge's sorted inputs."""
    if x.shape[1] <= limit:
        return x, y
    order = x.argsort(dim=1)
    take = torch.linspace(0, x.shape[1] - 1, limit, device=x.device).round().long()
    rows = order[:, take]
    return x.gather(1, rows), y.gather(1, rows)


def _scores(values: torch.Tensor, y_centered: torch.Tensor, y_ss: torch.Tensor, exact: bool = True) -> torch.Tensor:
    """R^2 of the best ``c * values + d`` for ``y``: ``values`` ``(E, C, N)``, result ``(E, C)``.

    ``exact=False`` uses one-pass sums (cheaper, for the coarse search); ``True`` centres first.
    """
    n = values.shape[-1]
    total = values.sum(-1)
    finite = torch.isfinite(total)  # NaN / inf anywhere in a row reaches its sum
    all_finite = bool(finite.all())
    if not all_finite:
        values = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
        total = values.sum(-1)
    squares = values.square().sum(-1)
    if exact:
        var = (values - (total / n).unsqueeze(-1)).square().sum(-1)
    else:
        var = squares - total.square() / n
    cov = torch.einsum("ecn,en->ec", values, y_centered)  # sum(y_centered) = 0, so no centring of values
    # a candidate that is constant on the samples (up to rounding) explains nothing
    good = var > (1e-12 if exact else 1e-9) * squares + torch.finfo(values.dtype).tiny
    if not all_finite:
        good = good & finite
    r2 = cov.square() / (var.clamp(min=torch.finfo(values.dtype).tiny) * y_ss.unsqueeze(1))
    return torch.where(good, r2.clamp(0.0, 1.0), torch.zeros_like(r2))


def _polish(functions, x, y, a, b, c, d, r2, y_ss, steps: int):
    """Levenberg-Marquardt on ``c f(a x + b) + d`` for every (edge, function) at once.

    A step is kept only where it lowers that fit's squared error, so a fit never gets worse.
    """
    params = torch.stack([a, b, c, d], dim=-1)  # (E, F, 4)
    damping = torch.full(a.shape, 1e-3, dtype=a.dtype)
    xs = x.unsqueeze(1)  # (E, 1, N)

    def residuals_and_jacobian(p):
        z = (p[..., 0:1] * xs + p[..., 1:2]).detach().requires_grad_(True)
        values = torch.stack([f.torch(z[:, i]) for i, f in enumerate(functions)], dim=1)
        (slope,) = torch.autograd.grad(values.sum(), z)
        values, slope = values.detach(), slope.detach()
        fine = torch.isfinite(values) & torch.isfinite(slope)
        values = torch.where(fine, values, torch.zeros_like(values))
        slope = torch.where(fine, slope, torch.zeros_like(slope))
        residual = p[..., 2:3] * values + p[..., 3:4] - y.unsqueeze(1)
        jacobian = torch.stack(
            [p[..., 2:3] * slope * xs, p[..., 2:3] * slope, values, torch.ones_like(values)], dim=-1
        )  # (E, F, N, 4)
        error = residual.square().sum(-1)
        return residual, jacobian, torch.where(fine.all(-1), error, torch.full_like(error, math.inf))

    with torch.enable_grad():
        residual, jacobian, error = residuals_and_jacobian(params)
        for _ in range(steps):
            normal = jacobian.transpose(-1, -2) @ jacobian  # (E, F, 4, 4)
            gradient = (jacobian.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1)
            diagonal = torch.diagonal(normal, dim1=-2, dim2=-1)
            damped = normal + torch.diag_embed(damping.unsqueeze(-1) * (diagonal + 1e-12))
            step = torch.linalg.solve_ex(damped, -gradient)[0]
            step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
            trial = params + step
            trial_residual, trial_jacobian, trial_error = residuals_and_jacobian(trial)
            better = trial_error < error
            params = torch.where(better.unsqueeze(-1), trial, params)
            residual = torch.where(better.unsqueeze(-1), trial_residual, residual)
            jacobian = torch.where(better[..., None, None], trial_jacobian, jacobian)
            error = torch.where(better, trial_error, error)
            damping = torch.where(better, damping / 3, damping * 10).clamp(1e-12, 1e12)
    polished = (1 - error / y_ss.unsqueeze(1)).clamp(0.0, 1.0)
    r2 = torch.where(torch.isfinite(error) & (r2 > 0), torch.maximum(r2, polished), r2)
    a, b, c, d = params.unbind(-1)
    return a, b, c, d, r2


def _step_breakpoints(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact best breakpoint of ``c f(x - t) + d`` for a step ``f`` (constant on each side
    of 0), per edge: ``x``, ``y`` ``(E, N)`` -> breakpoint ``t`` and its R^2, both ``(E,)``.

    Splitting the sorted samples after the j-th leaves two groups whose means are the best
    levels; with centred y (left sum P_j) the explained sum of squares is P_j^2 N / (j (N - j)),
    so every split is scored at once from a cumulative sum. ``t`` is the midpoint between the
    two samples of the best split (splits only between distinct inputs; R^2 0 when there are
    none).
    """
    order = x.argsort(dim=1)
    xs, ys = x.gather(1, order), y.gather(1, order)
    n = x.shape[1]
    centred = ys - ys.mean(1, keepdim=True)
    left_sum = centred.cumsum(1)[:, :-1]  # (E, N - 1): j = 1 .. N - 1 samples on the left
    left_count = torch.arange(1, n, dtype=x.dtype, device=x.device)
    explained = left_sum.square() * n / (left_count * (n - left_count))
    distinct = xs[:, 1:] > xs[:, :-1]
    explained = torch.where(distinct, explained, torch.full_like(explained, -1.0))
    best = explained.argmax(1, keepdim=True)
    jump = ((xs.gather(1, best) + xs.gather(1, best + 1)) / 2)[:, 0]
    total = centred.square().sum(1)
    r2 = (explained.gather(1, best)[:, 0] / total.clamp(min=torch.finfo(x.dtype).tiny)).clamp(0.0, 1.0)
    return jump, torch.where(distinct.any(1), r2, torch.zeros_like(r2))


#: Zoomed search: 9 x 9 points spanning +-1.5 cells of the previous level around its best point.
_ZOOM = torch.linspace(-1.5, 1.5, 9, dtype=torch.float64)
_ZOOM_STEP = 3.0 / 8


def fit_affine(
    x: torch.Tensor,
    y: torch.Tensor,
    library: Library | Sequence[SymbolicFunction],
    *,
    a_range: tuple[float, float] = (-10.0, 10.0),
    b_range: tuple[float, float] = (-10.0, 10.0),
    grid_number: int = 41,
    iterations: int = 3,
    starts: int = 3,
    polish: int = 8,
    max_samples: int = 1024,
    search_samples: int = 256,
    coarse_samples: int = 128,
) -> AffineFit:
    """Fit ``y ~ c * f(a * x + b) + d`` for every edge and every library function at once.

    ``x``, ``y`` are ``(edges, samples)`` (or ``(samples,)`` for one edge). (a, b) are found
    by a grid search over ``a_range`` x ``b_range`` (``grid_number`` points each, in
    coordinates where each edge's inputs span [-1, 1]), then zoomed ``iterations`` times
    around each of the ``starts`` best local maxima; for each (a, b), (c, d) are the
    least-squares solution, so the search ranks by R^2 alone (a ``step`` function's
    breakpoint is found exactly instead, see ``_step_breakpoints``). Finally ``polish``
    Levenberg-Marquardt steps refine (a, b, c, d) together. Computed in float64. Degenerate data (a
    constant edge, a constant input, a function undefined on the data) gives a low R^2 or a
    ``reason``, never an error.
    """
    functions = list(library)
    if not functions:
        raise ValueError("library must hold at least one function")
    x = torch.as_tensor(x).detach().to(torch.float64)
    y = torch.as_tensor(y).detach().to(torch.float64)
    if x.dim() == 1:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.shape != y.shape or x.dim() != 2 or x.shape[1] < 2:
        raise ValueError(f"x and y must have the same shape (edges, samples >= 2), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("x and y must be finite")
    x, y = _subsample(x, y, max_samples)
    n_edges = x.shape[0]
    y_mean = y.mean(1, keepdim=True)
    y_centered = y - y_mean
    y_ss = y_centered.square().sum(1)
    scale = 1.0 + y.abs().amax(1)
    constant_edge = y_ss <= (1e-12 * scale) ** 2 * y.shape[1]
    constant_input = (x.amax(1) - x.amin(1)) <= 1e-12 * (1.0 + x.abs().amax(1))
    y_ss = torch.where(constant_edge, torch.ones_like(y_ss), y_ss)
    # search in coordinates where each edge's inputs span [-1, 1], so the ranges of (a, b)
    # mean the same for an edge whose inputs are tiny as for one whose inputs are large
    centre = (x.amax(1, keepdim=True) + x.amin(1, keepdim=True)) / 2
    half = (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) / 2
    half = torch.where(constant_input.unsqueeze(1), torch.ones_like(half), half)
    x_original = x
    # the search looks at a subset of the samples (the coarse level at a smaller one); the
    # final least squares, polish and R^2 at all of them
    x, y_search = _subsample((x - centre) / half, y, search_samples)
    y_search_centered = y_search - y_search.mean(1, keepdim=True)
    y_search_ss = y_search_centered.square().sum(1)
    y_search_ss = torch.where(y_search_ss > 0, y_search_ss, torch.ones_like(y_search_ss))
    x_coarse, y_coarse = _subsample(x, y_search, coarse_samples)
    y_coarse = y_coarse - y_coarse.mean(1, keepdim=True)
    yss_coarse = y_coarse.square().sum(1)
    yss_coarse = torch.where(yss_coarse > 0, yss_coarse, torch.ones_like(yss_coarse))
    best = torch.zeros(n_edges, len(functions), 3, dtype=torch.float64)  # a, b, r2
    steps = torch.linspace(0.0, 1.0, grid_number, dtype=torch.float64)
    a_grid = a_range[0] + (a_range[1] - a_range[0]) * steps
    b_grid = b_range[0] + (b_range[1] - b_range[0]) * steps
    candidates_a, candidates_b = torch.meshgrid(a_grid, b_grid, indexing="ij")
    candidates_a, candidates_b = candidates_a.reshape(-1), candidates_b.reshape(-1)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations!r}")
    for f_index, function in enumerate(functions):
        if function.step:  # a = 1, b = -t in the search coordinates, at every sample
            jump, step_r2 = _step_breakpoints((x_original - centre) / half, y)
            best[:, f_index, 0], best[:, f_index, 1], best[:, f_index, 2] = 1.0, -jump, step_r2
            continue
        # coarse search, shared candidates for every edge; keep the best few local maxima so
        # that a broad but wrong basin cannot hide a narrow exact one
        values = function.torch(candidates_a.view(1, -1, 1) * x_coarse.unsqueeze(1) + candidates_b.view(1, -1, 1))
        r2 = _scores(values, y_coarse, yss_coarse, exact=False)
        peaks = torch.nn.functional.max_pool2d(
            r2.view(n_edges, 1, grid_number, grid_number), 3, stride=1, padding=1
        ).view(n_edges, -1)
        r2 = torch.where(r2 >= peaks, r2, torch.full_like(r2, -1.0))
        top = r2.topk(min(starts, r2.shape[1]), dim=1).indices  # (E, K)
        best_a, best_b = candidates_a[top], candidates_b[top]
        best_r2 = r2.gather(1, top)
        da = (a_range[1] - a_range[0]) / (grid_number - 1)
        db = (b_range[1] - b_range[0]) / (grid_number - 1)
        for level in range(iterations):
            # zoom around each kept point; the last level looks at every sample
            last = level == iterations - 1
            la, lb = torch.meshgrid(_ZOOM * da, _ZOOM * db, indexing="ij")
            a = (best_a.unsqueeze(-1) + la.reshape(1, 1, -1)).reshape(n_edges, -1)
            b = (best_b.unsqueeze(-1) + lb.reshape(1, 1, -1)).reshape(n_edges, -1)
            xs, yc, yss = (x, y_search_centered, y_search_ss) if last else (x_coarse, y_coarse, yss_coarse)
            values = function.torch(a.unsqueeze(-1) * xs.unsqueeze(1) + b.unsqueeze(-1))
            r2 = _scores(values, yc, yss, exact=last).view(n_edges, best_a.shape[1], -1)
            pick = r2.argmax(-1, keepdim=True)
            best_a = a.view_as(r2).gather(-1, pick)[..., 0]
            best_b = b.view_as(r2).gather(-1, pick)[..., 0]
            best_r2 = r2.gather(-1, pick)[..., 0]
            da, db = da * _ZOOM_STEP, db * _ZOOM_STEP
        choice = best_r2.argmax(1, keepdim=True)
        best[:, f_index, 0] = best_a.gather(1, choice)[:, 0]
        best[:, f_index, 1] = best_b.gather(1, choice)[:, 0]
        best[:, f_index, 2] = best_r2.gather(1, choice)[:, 0]

    a, b, r2 = best.unbind(-1)
    # back to the original coordinates: a_n * (x - centre) / half + b_n = a x + b
    a, b = a / half, b - a * centre / half
    x = x_original
    # (c, d) by least squares at the chosen (a, b)
    values = torch.stack([f.torch(a[:, i, None] * x + b[:, i, None]) for i, f in enumerate(functions)], dim=1)
    r2 = _scores(values, y_centered, y_ss, exact=True)
    values = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
    centered = values - values.mean(-1, keepdim=True)
    var = centered.square().sum(-1)
    c = torch.einsum("ecn,en->ec", centered, y_centered) / var.clamp(min=torch.finfo(torch.float64).tiny)
    c = torch.where(r2 > 0, c, torch.zeros_like(c))
    d = y_mean - c * values.mean(-1)
    if polish:
        a, b, c, d, r2 = _polish(functions, x, y, a, b, c, d, r2, y_ss, polish)
    # a constant edge is fit exactly by any function with c = 0
    a = torch.where(constant_edge.unsqueeze(1), torch.ones_like(a), a)
    b = torch.where(constant_edge.unsqueeze(1), torch.zeros_like(b), b)
    c = torch.where(constant_edge.unsqueeze(1), torch.zeros_like(c), c)
    d = torch.where(constant_edge.unsqueeze(1), y_mean.expand_as(d), d)
    r2 = torch.where(constant_edge.unsqueeze(1), torch.ones_like(r2), r2)
    for i, f in enumerate(functions):
        a[:, i], b[:, i], c[:, i], d[:, i] = f.canonical(a[:, i], b[:, i], c[:, i], d[:, i])
    reasons = [
        "constant edge" if bool(constant_edge[e]) else "constant input" if bool(constant_input[e]) else ""
        for e in range(n_edges)
    ]
    return AffineFit([f.name for f in functions], a, b, c, d, r2, reasons)
