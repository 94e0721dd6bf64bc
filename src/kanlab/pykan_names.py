"""pykan's keywords that kanlab does not take, each with what to do instead.

kanlab keeps pykan's method names where it does what pykan does. A pykan keyword that has no
place here gets a ``TypeError`` naming the kanlab equivalent (or saying there is none), not
Python's bare "unexpected keyword argument".
"""

from __future__ import annotations

__all__ = ["check_keywords", "reject_pykan_keywords", "PYKAN_KEYWORDS"]

_FILES = "kanlab writes no files by itself: call model.save(path) (and fit(checkpoint=path) for the training state)"
_FIGURES = ("kanlab draws no figures while training: call model.plot(path) after fit (see kanlab.plot.draw "
            "for its options)")
_LOGGING = ("kanlab reports through the logging module: logging.getLogger('kanlab').setLevel(logging.INFO); "
            "fit(progress=True) shows a progress bar")

PYKAN_KEYWORDS: dict[str, str] = {
    "verbose": _LOGGING,
    "auto_save": _FILES,
    "ckpt_path": _FILES,
    "state_id": _FILES,
    "round": _FILES,
    "first_init": "there is no equivalent: a KAN is initialised once, from its seed",
    "save_fig": _FIGURES,
    "save_fig_freq": _FIGURES,
    "img_folder": _FIGURES,
    "beta": _FIGURES,
    "in_vars": "name the inputs when reading the model: model.symbolic_formula(var_names=...) or model.plot(in_vars=...)",
    "out_vars": "name the outputs when drawing the model: model.plot(out_vars=...)",
    "singularity_avoiding": ("there is no equivalent: kanlab's symbolic functions are evaluated as they are "
                             "(pykan's guard against singular functions is not implemented)"),
    "y_th": "there is no equivalent (it belongs to pykan's singularity_avoiding, which kanlab does not implement)",
    "sparse_init": "there is no equivalent: every edge starts as pykan's default (sparse_init=False)",
    "symbolic_enabled": ("there is nothing to switch: kanlab evaluates the symbolic branch only on layers that "
                         "have symbolic edges"),
    "affine_trainable": ("there is nothing to switch: a symbolic edge's (a, b, c, d) (layer.symbolic_affine) "
                         "train with the rest; freeze them with requires_grad_(False)"),
    "save_act": ("there is nothing to switch: kanlab keeps a sample of the training inputs (model.sample_input) "
                 "and computes activations when asked (model.edge_activations(x))"),
    "reg_metric": "there is no equivalent: kanlab's regulariser is pykan's default, 'edge_forward_spline_n'",
    "display_metrics": "pass metrics={name: fn} to fit and read them from the returned history",
    "log_history": "there is no equivalent: kanlab keeps no log of operations",
    "r2_loss_fun": "there is no equivalent: candidates are ranked by R^2 and simplicity (weight_simple)",
}


def reject_pykan_keywords(where: str, options: dict) -> None:
    """Raise ``TypeError`` naming what to use instead if ``options`` holds one of pykan's
    keywords that kanlab does not take (others are left for the callee)."""
    for name in options:
        if name in PYKAN_KEYWORDS:
            raise TypeError(f"{where} got pykan's keyword {name!r}, which kanlab does not take: {PYKAN_KEYWORDS[name]}")


def check_keywords(where: str, options: dict) -> None:
    """Raise ``TypeError`` for keywords ``where`` does not take: pykan's with what to use
    instead, any other as Python would."""
    reject_pykan_keywords(where, options)
    if options:
        raise TypeError(f"{where} got an unexpected keyword argument {next(iter(options))!r}")
