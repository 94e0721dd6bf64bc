"""scikit-learn estimators: ``KANRegressor`` and ``KANClassifier`` (needs ``scikit-learn``).

Both scale every feature linearly onto the grid range ``[-1, 1]`` using the training
minimum and maximum (``x_scaling_``; a constant feature maps to 0), so raw features work; values outside
the training range at predict time fall outside the grid, where only the residual branch
acts. ``KANRegressor`` also standardises each target (``y_scaling_``: mean 0, standard
deviation 1) and undoes it on prediction. The trained network is ``module_`` (a ``kanlab.KAN`` on the scaled
data); ``symbolic_formula`` composes its formula in the original units.

The defaults are meant to be kept, as scikit-learn's ``MLPClassifier()`` / ``MLPRegressor()``
defaults are: one hidden layer sized from the data (``hidden_width="auto"``), Adam on
mini-batches of up to 200 rows, up to ``steps`` passes over the data (epochs), and early
stopping on a held-out tenth of the rows that keeps the best parameters. Training is
``kanlab.fit`` once per grid in ``grid`` (grid extension between stages); ``loss_curve_``
holds the training objective after every epoch.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_X_y, column_or_1d, validate_data

from .model import KAN
from .scaling import AffineScaling, formula_in_units
from .train import fit as fit_model

__all__ = ["KANRegressor", "KANClassifier"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_MAX_AUTO_WIDTH = 32


def _grids(grid) -> list[int]:
    grids = [grid] if isinstance(grid, (int, np.integer)) else list(grid)
    if not grids or any(not isinstance(g, (int, np.integer)) or isinstance(g, bool) or g < 1 for g in grids):
        raise ValueError(f"grid must be a positive int or a sequence of them (grid extension), got {grid!r}")
    return [int(g) for g in grids]


def _hidden(hidden_width, n_features: int, n_outputs: int) -> list[int]:
    """Hidden widths; ``"auto"``: one layer of ``2 * n_features + 1`` nodes (the width of the
    Kolmogorov-Arnold representation), at most 32, and at least ``n_outputs``."""
    if isinstance(hidden_width, str) and hidden_width == "auto":
        return [max(n_outputs, min(_MAX_AUTO_WIDTH, 2 * n_features + 1))]
    widths = [hidden_width] if isinstance(hidden_width, (int, np.integer)) else list(hidden_width)
    if any(not isinstance(w, (int, np.integer)) or isinstance(w, bool) or w < 1 for w in widths):
        raise ValueError(f"hidden_width must be 'auto', a positive int or a sequence of them, got {hidden_width!r}")
    return [int(w) for w in widths]


def _positive_int(value, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class _KANEstimator(BaseEstimator):
    """Shared parameters and training; subclasses define the outputs and the loss."""

    def __init__(
        self,
        hidden_width="auto",
        *,
        grid=5,
        k=3,
        steps=200,
        opt="Adam",
        lr=0.01,
        batch_size="auto",
        lamb=0.0,
        update_grid=True,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        dtype="float64",
        random_state=None,
    ):
        self.hidden_width = hidden_width
        self.grid = grid
        self.k = k
        self.steps = steps
        self.opt = opt
        self.lr = lr
        self.batch_size = batch_size
        self.lamb = lamb
        self.update_grid = update_grid
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.dtype = dtype
        self.random_state = random_state

    # ------------------------------------------------------------------ helpers
    def _torch_dtype(self) -> torch.dtype:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return _DTYPES[self.dtype]

    def _check_samples(self, X) -> None:
        if X.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples, got n_samples = {X.shape[0]}")

    def _scaled(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.x_scaling_.forward(X), dtype=self._torch_dtype())

    def _batch(self, n_rows: int) -> int:
        """Rows per step: ``"auto"`` is ``min(200, n_rows)`` (as scikit-learn's MLPs); -1 the whole set."""
        if isinstance(self.batch_size, str) and self.batch_size == "auto":
            return min(200, n_rows)
        if self.batch_size == -1:
            return n_rows
        return min(_positive_int(self.batch_size, "batch_size"), n_rows)

    def _train(self, X: torch.Tensor, Y: torch.Tensor, n_out: int, loss_fn=None) -> None:
        grids = _grids(self.grid)
        epochs = _positive_int(self.steps, "steps")
        if self.opt not in ("LBFGS", "Adam"):
            raise ValueError(f"opt must be 'LBFGS' or 'Adam', got {self.opt!r}")
        random = check_random_state(self.random_state)
        seed = int(random.randint(2**31 - 1))
        width = [X.shape[1], *_hidden(self.hidden_width, X.shape[1], n_out), n_out]
        model = KAN(width, grid=grids[0], k=self.k, seed=seed, dtype=self._torch_dtype())
        stopper = None
        if self.early_stopping:
            X, Y, stopper = self._validation_split(X, Y, random, loss_fn)
        batch = self._batch(X.shape[0])
        per_epoch = max(1, X.shape[0] // batch)
        curve = []
        for stage, grid in enumerate(grids):
            if stage:
                model = model.refine(grid, X)
            steps = epochs * per_epoch
            # with Adam the grid follows the data through the first epochs (at most 10, and 50
            # steps) in 5 updates: each refits every edge, a third of a small table's fit time
            stop_grid_update = min(50, steps // 2, 10 * per_epoch) if self.opt == "Adam" else 50
            if stopper is not None:
                stopper.warmup = stop_grid_update if self.update_grid else 0
            history = fit_model(
                model, (X, Y), opt=self.opt, steps=steps, lr=self.lr, batch=-1 if batch == X.shape[0] else batch,
                lamb=self.lamb, update_grid=self.update_grid, loss_fn=loss_fn, log=per_epoch, seed=seed,
                stop_grid_update_step=stop_grid_update, grid_update_num=5 if self.opt == "Adam" else 10,
                progress=False, callbacks=[stopper] if stopper else (),
            )
            curve.extend(history["objective"])
            if stopper is not None:
                stopper.restore_best(model)
            if history["stopped"] == "diverged":
                break
        self.module_ = model
        self.loss_curve_ = curve
        self.n_iter_ = len(curve)
        if stopper is not None:
            self.validation_loss_ = stopper.losses

    def _validation_split(self, X, Y, random, loss_fn):
        """Hold out ``validation_fraction`` of the rows; returns the rest and the stopper."""
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction!r}")
        if not isinstance(self.n_iter_no_change, int) or self.n_iter_no_change < 1:
            raise ValueError(f"n_iter_no_change must be a positive int, got {self.n_iter_no_change!r}")
        order = torch.as_tensor(random.permutation(X.shape[0]))
        n_val = max(1, int(round(self.validation_fraction * X.shape[0])))
        if X.shape[0] - n_val < 2:
            # too few rows to hold any out: train on all of them, without early stopping
            return X, Y, None
        held, kept = order[:n_val], order[n_val:]
        stopper = _EarlyStopping(X[held], Y[held], loss_fn, self.n_iter_no_change, float(self.tol))
        return X[kept], Y[kept], stopper

    def _forward(self, X) -> torch.Tensor:
        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with torch.no_grad():
            return self.module_(self._scaled(X))

    def symbolic_formula(self, var_names=None, round_digits: int | None = 4) -> list:
        """The network's formula per output in the original feature (and, for the regressor,
        target) units; call ``module_.auto_symbolic()`` first. ``var_names`` defaults to the
        training frame's column names, else ``x_1 ... x_n``."""
        check_is_fitted(self, "module_")
        if var_names is None:
            names = getattr(self, "feature_names_in_", None)
            var_names = list(names) if names is not None else [f"x_{i + 1}" for i in range(self.n_features_in_)]
        return formula_in_units(self.module_, var_names, self.x_scaling_, self._output_scaling(), round_digits)

    def _output_scaling(self):
        return None


class _EarlyStopping:
    """A ``fit`` callback: stop when the validation loss has not improved for ``patience``
    steps; ``restore_best`` puts back the best parameters of the stage."""

    def __init__(self, X, Y, loss_fn, patience: int, tol: float = 0.0) -> None:
        self.X, self.Y, self.patience, self.tol = X, Y, patience, tol
        self.warmup = 0  # steps during which the grid still moves: patience is not counted
        self.loss_fn = loss_fn or (lambda pred, label: torch.mean((pred - label) ** 2))
        self.losses: list[float] = []
        self._best, self._best_state, self._since = float("inf"), None, 0

    def __call__(self, step, model, history) -> bool:
        with torch.no_grad():
            loss = float(self.loss_fn(model(self.X), self.Y))
        self.losses.append(loss)
        if loss < self._best:  # the best parameters are kept whatever the gain ...
            self._best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if loss < self._best - self.tol or step <= self.warmup:  # only a gain above tol resets the patience
            self._since = 0
        else:
            self._since += 1
        self._best = min(self._best, loss)
        return self._since >= self.patience

    def restore_best(self, model) -> None:
        if self._best_state is not None:
            model.load_state_dict(self._best_state)
        self._best, self._best_state, self._since = float("inf"), None, 0


class KANRegressor(RegressorMixin, _KANEstimator):
    """KAN regression with scikit-learn's interface; one or several targets.

    ``hidden_width``: hidden layer widths (``(5,)`` gives ``KAN([n_features, 5, n_targets])``;
    ``"auto"``: one layer of ``min(32, 2 * n_features + 1)``); ``grid``: grid intervals, or a
    sequence for grid extension (``(5, 10)``: train at 5, refine to 10, train again);
    ``steps``: epochs (passes over the training rows) per grid; ``opt`` ``"Adam"`` or
    ``"LBFGS"`` with ``lr``; ``batch_size`` rows per step (``"auto"``: ``min(200, n)``; -1 the
    whole set); ``lamb`` the paper's sparsification strength; ``update_grid`` adapts grids to
    the data during the first steps of each stage; ``early_stopping`` holds out
    ``validation_fraction`` of the rows and ends a stage once the validation loss has not
    improved by more than ``tol`` for ``n_iter_no_change`` epochs, keeping the stage's best parameters
    (``validation_loss_`` records it) - the guard against overfitting small, noisy tables.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def fit(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        self._check_samples(X)
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        self._y_ndim = y.ndim
        self.n_outputs_ = Y.shape[1]
        self.x_scaling_ = AffineScaling.to_range(X)
        self.y_scaling_ = AffineScaling.standard(Y)
        target = torch.as_tensor(self.y_scaling_.forward(Y), dtype=self._torch_dtype())
        self._train(self._scaled(X), target, self.n_outputs_)
        return self

    def predict(self, X):
        """Predictions ``(n_samples,)``, or ``(n_samples, n_targets)`` if fit on a 2-D ``y``."""
        scaled = self._forward(X).cpu().double().numpy()
        pred = self.y_scaling_.inverse(scaled)
        return pred.ravel() if self._y_ndim == 1 else pred

    def _output_scaling(self):
        return self.y_scaling_

    def discover(self, X, y, budget: float = 60.0):
        """A formula for ``y`` from ``X`` by ``kanlab.discover`` (term search, structure, the
        KAN workflow) within ``budget`` seconds, seeded by ``random_state``; the variables are
        a DataFrame's column names, else ``x_1 ... x_n``. Returns the ``Discovery`` and keeps
        it as ``discovery_`` (its ``.formula``, ``.front``, ``.model``); the fitted network, if
        any, is left as it is."""
        from .discover import discover

        names = getattr(X, "columns", None)
        X, y = check_X_y(X, y, y_numeric=True, dtype=np.float64, multi_output=True)
        if y.ndim == 2 and y.shape[1] != 1:
            raise ValueError(f"y must be one target for discover, got {y.shape[1]} columns")
        variables = [str(c) for c in names] if names is not None else None
        seed = self.random_state if isinstance(self.random_state, int) else 0
        self.discovery_ = discover(X, y.reshape(-1), variables, budget=budget, seed=seed)
        return self.discovery_


class KANClassifier(ClassifierMixin, _KANEstimator):
    """KAN classification (binary or multi-class) with scikit-learn's interface.

    The network has one output per class (logits), trained with cross-entropy;
    ``predict_proba`` is their softmax. Parameters as ``KANRegressor``.
    """

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self._check_samples(X)
        encoder = LabelEncoder()
        codes = encoder.fit_transform(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"KANClassifier needs samples of at least 2 classes, got 1 class: {self.classes_[0]!r}")
        self.x_scaling_ = AffineScaling.to_range(X)
        labels = torch.as_tensor(codes, dtype=torch.long)
        self._train(self._scaled(X), labels, len(self.classes_), loss_fn=torch.nn.CrossEntropyLoss())
        return self

    def predict_proba(self, X):
        """Class probabilities ``(n_samples, n_classes)`` in the order of ``classes_``."""
        return torch.softmax(self._forward(X), dim=1).cpu().double().numpy()

    def predict_log_proba(self, X):
        """``log(predict_proba(X))`` (as scikit-learn's MLPClassifier: -inf where a
        probability rounds to 0)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        check_is_fitted(self, "module_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
