"""L-BFGS with a strong-Wolfe line search, for models with few parameters.

The algorithm and its decisions are those of ``torch.optim.LBFGS`` (two-loop recursion over the
last ``history_size`` curvature pairs, cubic interpolation in the bracketing and zoom phases of
the line search, the same stopping tests), so a float64 run takes the same steps to the last bit:
where torch holds a step length as a 0-d tensor it divides a Python number by it as a product
with its reciprocal, and it takes the cubic's square root of a 0-d tensor (on some CPUs not the
correctly rounded one), and so do we. What differs is the cost around
the steps, which for a small KAN is most of the optimizer's time: the parameters are moved with
one fused call over all of them instead of one call per parameter, and the scalars of the
recursion and the line search are Python floats instead of 0-d tensors (float32 parameters get
double-precision scalars).

``adam`` is torch's Adam with its fused kernel wherever every parameter's device has one.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from . import native

__all__ = ["LBFGS", "adam"]

# devices with a fused Adam kernel in torch
_FUSED_ADAM_DEVICES = ("cpu", "cuda")


def adam(parameters: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    """``torch.optim.Adam(parameters, lr)``, fused (one kernel for all the parameters) where they
    are all floating-point tensors on a device that has one, else torch's default. On this
    project's 2-core CPU a step of KAN([2, 5, 1])'s parameters took 72 us fused against 208 us
    by default, and of a (256, 256, G = 100) layer's 3.9 ms against 20 ms."""
    parameters = list(parameters)
    fused = bool(parameters) and all(p.is_floating_point() and p.device.type in _FUSED_ADAM_DEVICES
                                     for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, fused=fused or None)


_BRACKET_TOLERANCE = 1e-9  # the line search's own tolerance on the bracket width (torch's default)
_SUFFICIENT_DECREASE = 1e-4  # c1
_CURVATURE = 0.9  # c2


class _TensorValued(float):
    """A step length that torch's LBFGS holds as a 0-d tensor (one computed from the gradient):
    torch divides a Python number by it as a product with its reciprocal, which can round
    differently from a division, so ``_cubic_minimum`` does the same for these."""


def _as_step(value: float, tensor_valued: bool) -> float:
    """``value`` marked as torch would hold it: a 0-d tensor (``_TensorValued``) or a number."""
    return _TensorValued(value) if tensor_valued else float(value)


def _is_tensor_valued(*values: float) -> bool:
    return any(isinstance(value, _TensorValued) for value in values)


def _cubic_minimum(t1: float, f1: float, g1: float, t2: float, f2: float, g2: float,
                   bounds: tuple[float, float] | None = None) -> float:
    """Minimiser of the cubic through (t1, f1) and (t2, f2) with slopes g1, g2, within bounds
    (default: between t1 and t2); the bounds' midpoint when the cubic has no minimum. The
    result is marked (``_TensorValued``) where torch's would be a 0-d tensor."""
    low, high = bounds if bounds is not None else ((t1, t2) if t1 <= t2 else (t2, t1))
    if _is_tensor_valued(t1, t2):  # a number over a 0-d tensor: torch multiplies by its reciprocal
        d1 = g1 + g2 - 3 * (f1 - f2) * (1.0 / (t1 - t2))
    else:
        d1 = g1 + g2 - 3 * (f1 - f2) / (t1 - t2)
    square = d1**2 - g1 * g2
    if not square >= 0:  # (also NaN)
        return _as_step((low + high) / 2.0, _is_tensor_valued(low, high))
    # torch takes this root of a 0-d tensor, which on some CPUs (AVX-512 on AMD EPYC, seen) is not
    # the correctly rounded math.sqrt: the same call keeps the step lengths equal to the bit
    d2 = float(torch.tensor(square, dtype=torch.float64).sqrt())
    if t1 <= t2:
        position = t2 - (t2 - t1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        position = t1 - (t1 - t2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    # the slopes are tensors in torch, so is the minimiser; min and max return one of their
    # arguments as torch's do (the first on ties), marks included
    return min(max(_TensorValued(position), low), high)


class LBFGS(torch.optim.Optimizer):
    """``torch.optim.LBFGS``'s algorithm and arguments (``lr``, ``max_iter``, ``max_eval``,
    ``tolerance_grad``, ``tolerance_change``, ``history_size``, ``line_search_fn`` None or
    ``"strong_wolfe"``), with less work around each function evaluation (module docstring).
    ``tolerance_ys`` is the curvature ``y's`` at or below which a pair is not kept (torch fixes
    it at 1e-10; pykan's training passes 1e-32, which keeps the pairs of a loss near 1e-4 that
    1e-10 would drop, and so converges further in the same steps).
    One parameter group; ``step(closure)`` with a closure that clears the gradients, computes
    the loss, calls ``backward`` and returns the loss."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1.0, max_iter: int = 20,
                 max_eval: int | None = None, tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                 history_size: int = 100, line_search_fn: str | None = None,
                 tolerance_ys: float = 1e-10) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
        if not isinstance(history_size, int) or history_size < 1:
            raise ValueError(f"history_size must be a positive int, got {history_size!r}")
        if not tolerance_ys >= 0:
            raise ValueError(f"tolerance_ys must be >= 0, got {tolerance_ys!r}")
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval if max_eval is not None else max_iter * 5 // 4,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        history_size=history_size, line_search_fn=line_search_fn,
                        tolerance_ys=float(tolerance_ys))
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS takes one parameter group")
        self._params: list[torch.Tensor] = self.param_groups[0]["params"]
        if any(p.is_complex() or p.is_sparse for p in self._params):
            raise ValueError("LBFGS takes dense real parameters")
        self._sizes = [p.numel() for p in self._params]

    def __setstate__(self, state: dict) -> None:
        """Also on ``load_state_dict``: a state saved before ``tolerance_ys`` existed had torch's."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("tolerance_ys", 1e-10)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the parameters' gradients (a plain loop: this runs once per function evaluation)."""
        for p in self._params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    # ------------------------------------------------------------------ flat views
    def _flat_parameters(self) -> list[torch.Tensor]:
        """Flat views of the parameters (sharing their storage and version counters)."""
        return [p.detach().view(-1) for p in self._params]

    def _flat_grad(self) -> torch.Tensor:
        return torch.cat([
            p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in self._params
        ])

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """Up to ``max_iter`` L-BFGS iterations on ``closure``; returns the first loss."""
        if any(not p.is_contiguous() for p in self._params):
            raise ValueError("LBFGS needs contiguous parameters")
        closure = torch.enable_grad()(closure)
        group = self.param_groups[0]
        lr, max_iter, max_eval = float(group["lr"]), group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size, line_search = group["history_size"], group["line_search_fn"]
        tolerance_ys = group["tolerance_ys"]
        flat = self._flat_parameters()

        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        first_loss = closure()
        loss = float(first_loss)
        evals = 1
        state["func_evals"] += 1
        grad = self._flat_grad()
        if float(grad.abs().max()) <= tolerance_grad:
            return first_loss

        direction, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        h_diag, prev_grad, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                direction = grad.neg()
                old_dirs, old_stps, ro, h_diag = [], [], [], 1.0
            else:
                y = grad.sub(prev_grad)
                s = direction.mul(t)
                ys = float(y.dot(s))
                if ys > tolerance_ys:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / float(y.dot(y))
                direction = self._two_loop(grad, old_dirs, old_stps, ro, h_diag)

            if prev_grad is None:
                prev_grad = grad.clone()
            else:
                prev_grad.copy_(grad)
            prev_loss = loss

            if state["n_iter"] == 1:  # torch: min(1, 1 / tensor) * lr, a tensor where 1 / tensor < 1
                reciprocal = 1.0 / float(grad.abs().sum())
                t = _as_step(reciprocal * lr, True) if reciprocal < 1.0 else 1.0 * lr
            else:
                t = lr
            slope = float(grad.dot(direction))
            if slope > -tolerance_change:
                break

            steps = torch.split_with_sizes(direction, self._sizes)
            d_norm = float(direction.abs().max())
            if line_search == "strong_wolfe":
                start = torch.cat(flat)
                loss, grad, t, ls_evals = self._strong_wolfe(
                    closure, flat, start, steps, t, direction, d_norm, loss, grad, slope, max_eval - evals)
                torch._foreach_add_(flat, steps, alpha=t)
                grad_small = float(grad.abs().max()) <= tolerance_grad
            else:
                torch._foreach_add_(flat, steps, alpha=t)
                ls_evals = 0
                grad_small = False
                if n_iter != max_iter:
                    loss = float(closure())
                    grad = self._flat_grad()
                    grad_small = float(grad.abs().max()) <= tolerance_grad
                    ls_evals = 1
            evals += ls_evals
            state["func_evals"] += ls_evals

            if n_iter == max_iter or evals >= max_eval or grad_small:
                break
            if d_norm * abs(t) <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state.update(d=direction, t=float(t), old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag,
                     prev_flat_grad=prev_grad, prev_loss=prev_loss)
        return first_loss

    @staticmethod
    def _two_loop(grad: torch.Tensor, old_dirs, old_stps, ro, h_diag: float) -> torch.Tensor:
        """The L-BFGS direction ``-H grad`` from the curvature pairs (Nocedal and Wright, alg. 7.4);
        the compiled recursion where the kernel is loaded (the same calls, one interpreter call)."""
        compiled = native.lbfgs_direction(grad, old_dirs, old_stps, ro, h_diag)
        if compiled is not None:
            return compiled
        q = grad.neg()
        alphas = [0.0] * len(old_dirs)
        for i in range(len(old_dirs) - 1, -1, -1):
            alphas[i] = float(old_stps[i].dot(q)) * ro[i]
            q.add_(old_dirs[i], alpha=-alphas[i])
        r = q.mul_(h_diag)
        for i in range(len(old_dirs)):
            beta = float(old_dirs[i].dot(r)) * ro[i]
            r.add_(old_stps[i], alpha=alphas[i] - beta)
        return r

    def _evaluate(self, closure, flat, start_steps, steps, t: float) -> tuple[float, torch.Tensor]:
        """Loss and flat gradient at ``start + t * direction``; the parameters are put back after."""
        torch._foreach_add_(flat, steps, alpha=t)
        loss = float(closure())
        grad = self._flat_grad()
        torch._foreach_copy_(flat, start_steps)
        return loss, grad

    def _strong_wolfe(self, closure, flat, start, steps, t, direction, d_norm, f, g, slope, max_ls):
        """Step length t along ``direction`` (``d_norm``: its largest magnitude) meeting the strong
        Wolfe conditions (bracketing, then zoom by cubic interpolation; Nocedal and Wright, alg.
        3.5 and 3.6). Returns the loss and gradient there, t and the number of evaluations."""
        start_parts = torch.split_with_sizes(start, self._sizes)

        def evaluate(step_length):
            loss, grad = self._evaluate(closure, flat, start_parts, steps, step_length)
            return loss, grad, float(grad.dot(direction))

        f_new, g_new, slope_new = evaluate(t)
        evals = 1
        t_prev, f_prev, g_prev, slope_prev = 0.0, f, g, slope
        done = False
        ls_iter = 0
        bracket = None
        while ls_iter < max_ls:
            if f_new > f + _SUFFICIENT_DECREASE * t * slope or (ls_iter > 1 and f_new >= f_prev):
                bracket = [[t_prev, f_prev, g_prev, slope_prev], [t, f_new, g_new, slope_new]]
                break
            if abs(slope_new) <= -_CURVATURE * slope:
                bracket, done = [[t, f_new, g_new, slope_new]], True
                break
            if slope_new >= 0:
                bracket = [[t_prev, f_prev, g_prev, slope_prev], [t, f_new, g_new, slope_new]]
                break
            low = _as_step(t + 0.01 * (t - t_prev), _is_tensor_valued(t, t_prev))
            high = _as_step(t * 10, _is_tensor_valued(t))
            t_next = _cubic_minimum(t_prev, f_prev, slope_prev, t, f_new, slope_new, bounds=(low, high))
            t_prev, f_prev, g_prev, slope_prev = t, f_new, g_new, slope_new
            t = t_next
            f_new, g_new, slope_new = evaluate(t)
            evals += 1
            ls_iter += 1
        if ls_iter == max_ls:
            bracket = [[0.0, f, g, slope], [t, f_new, g_new, slope_new]]

        # zoom: shrink the bracket [low point, high point] around a point meeting the conditions
        low_pos, high_pos = (0, 1) if bracket[0][1] <= bracket[-1][1] else (1, 0)
        insufficient = False
        while not done and ls_iter < max_ls:
            (t0, f0, _, s0), (t1, f1, _, s1) = bracket
            if abs(t1 - t0) * d_norm < _BRACKET_TOLERANCE:
                break
            t = _cubic_minimum(t0, f0, s0, t1, f1, s1)
            top, bottom = max(t0, t1), min(t0, t1)
            margin = 0.1 * (top - bottom)
            if min(top - t, t - bottom) < margin:  # too close to an end of the bracket
                if insufficient or t >= top or t <= bottom:
                    t = top - margin if abs(t - top) < abs(t - bottom) else bottom + margin
                    t = _as_step(t, _is_tensor_valued(t0, t1))
                    insufficient = False
                else:
                    insufficient = True
            else:
                insufficient = False
            f_new, g_new, slope_new = evaluate(t)
            evals += 1
            ls_iter += 1
            if f_new > f + _SUFFICIENT_DECREASE * t * slope or f_new >= bracket[low_pos][1]:
                bracket[high_pos] = [t, f_new, g_new, slope_new]
                low_pos, high_pos = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
            else:
                if abs(slope_new) <= -_CURVATURE * slope:
                    done = True
                elif slope_new * (bracket[high_pos][0] - bracket[low_pos][0]) >= 0:
                    bracket[high_pos] = bracket[low_pos]
                bracket[low_pos] = [t, f_new, g_new, slope_new]
        t, f_new, g_new, _ = bracket[low_pos]
        return f_new, g_new, t, evals
