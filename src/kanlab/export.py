"""Formulas out of kanlab: LaTeX text, and numpy / torch callables of sympy expressions.

sympy is the single source: each export is a printer or ``lambdify`` of the same expression.
"""

from __future__ import annotations

from typing import Callable, Sequence

__all__ = ["to_latex", "to_numpy", "to_torch", "to_onnx"]


def _as_list(exprs):
    return list(exprs) if isinstance(exprs, (list, tuple)) else [exprs]


def to_latex(expr) -> str:
    """The LaTeX string of a formula (one expression, or a list joined by commas)."""
    import sympy

    return ", ".join(sympy.latex(e) for e in _as_list(expr))


def _callable(exprs, variables: Sequence, modules: str) -> Callable:
    import sympy

    exprs = _as_list(exprs)
    free = set().union(*(sympy.sympify(e).free_symbols for e in exprs))
    missing = free - set(variables)
    if missing:
        raise ValueError(f"variables: the formula also uses {sorted(map(str, missing))}")
    functions = [sympy.lambdify(list(variables), e, modules=modules) for e in exprs]
    return functions


def to_numpy(exprs, variables: Sequence) -> Callable:
    """``f(X)`` for ``X`` of shape ``(N, len(variables))``: returns ``(N, n_outputs)`` (numpy)."""
    import numpy as np

    functions = _callable(exprs, variables, "numpy")

    def evaluate(X):
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(variables):
            raise ValueError(f"X must be (N, {len(variables)}), got shape {X.shape}")
        columns = [X[:, m] for m in range(X.shape[1])]
        return np.stack([np.broadcast_to(f(*columns), (X.shape[0],)) for f in functions], axis=1)

    return evaluate


def to_torch(exprs, variables: Sequence) -> Callable:
    """``f(X)`` for a tensor ``X`` of shape ``(N, len(variables))``: returns ``(N, n_outputs)``."""
    import torch

    functions = _callable(exprs, variables, "torch")

    def evaluate(X):
        if X.dim() != 2 or X.shape[1] != len(variables):
            raise ValueError(f"X must be (N, {len(variables)}), got shape {tuple(X.shape)}")
        columns = X.unbind(1)
        outputs = []
        for f in functions:
            value = f(*columns)
            outputs.append(value if isinstance(value, torch.Tensor) and value.shape == (X.shape[0],)
                           else torch.zeros(X.shape[0], dtype=X.dtype, device=X.device) + value)
        return torch.stack(outputs, dim=1)

    return evaluate


def to_onnx(model, path, *, example=None, opset: int | None = None) -> None:
    """Write ``model`` (numeric or symbolic edges) to an ONNX file at ``path``, batch size dynamic.

    Uses torch's ONNX exporter (needs ``onnx`` and ``onnxscript``; run the file with
    ``onnxruntime``). ``example`` is an input ``(batch, n_inputs)`` used for tracing
    (default: two rows of the kept training sample, else zeros). The file is written
    atomically. Input name ``x``, output name ``y``.
    """
    import contextlib
    import io as stdio

    import torch

    from .io import write_atomically

    if example is None:
        sample = getattr(model, "sample_input", None)
        example = sample[:2] if sample is not None else torch.zeros(2, model.n_inputs, dtype=model.dtype, device=model.device)
    if not isinstance(example, torch.Tensor) or example.dim() != 2 or example.shape[1] != model.n_inputs:
        raise ValueError(f"example must be a tensor (batch, {model.n_inputs}), got {example!r:.80}")
    batch = torch.export.Dim("batch", min=1)
    was_training = model.training
    model.eval()
    try:
        with contextlib.redirect_stdout(stdio.StringIO()):  # the exporter reports its progress on stdout
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=["x"], output_names=["y"],
                dynamic_shapes={"x": {0: batch}}, opset_version=opset, verbose=False,
            )
    finally:
        model.train(was_training)
    import onnx

    write_atomically(path, lambda stream: stream.write(onnx.ModelProto.SerializeToString(program.model_proto)))
