"""kanlab's scikit-learn estimators against scikit-learn's MLPs, both at their defaults; and,
with ``--tuned``, KANRegressor against MLPs with the same tuning budget.

At the defaults (what a user who keeps them gets): ``KANClassifier()`` against
``MLPClassifier()`` on the bundled digits, iris, wine and breast_cancer tables, and
``KANRegressor()`` against ``MLPRegressor()`` on diabetes and Friedman #1; raw features, a
70 / 30 split per seed (stratified for the classifiers), test accuracy or R^2 and the fit's
wall time, medians over the seeds; the two models of a seed are fit one after the other.

Tuned (``--tuned``). Data: scikit-learn's bundled diabetes table (442 rows, 10 features) and Friedman #1
(``make_friedman1``, 2000 rows, 10 features of which 5 matter, noise 1.0; generated
deterministically, so nothing is downloaded). Each seed splits 75 / 25; every model gets the
same tuning budget: a 4-setting grid search with 3-fold cross-validation on the training part
(inputs standardised for the MLPs; the KAN scales its own), then a refit; test R^2 / RMSE and
the wall time of search + refit are reported as medians over the seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris, load_wine, make_friedman1
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).parent))
from common import markdown_table, write_section  # noqa: E402

from kanlab.experiments.common import minimize  # noqa: E402
from kanlab.sklearn import KANClassifier, KANRegressor  # noqa: E402


class TorchMLP(RegressorMixin, BaseEstimator):
    """A tanh MLP trained like the KAN: full-batch LBFGS (strong Wolfe, history 10) with ``fit``'s
    settings (objective divided by its first value, tolerances 1e-32, so it never stops early
    and keeps small curvature pairs), ``steps`` steps, standardised targets, float64."""

    def __init__(self, hidden=(16,), steps=100, weight_decay=0.0, random_state=0):
        self.hidden = hidden
        self.steps = steps
        self.weight_decay = weight_decay
        self.random_state = random_state

    def fit(self, X, y):
        torch.manual_seed(self.random_state)
        sizes = [X.shape[1], *self.hidden, 1]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
        self.net_ = torch.nn.Sequential(*layers[:-1]).double()
        self.mean_, self.std_ = y.mean(), y.std() or 1.0
        X = torch.as_tensor(X, dtype=torch.float64)
        Y = torch.as_tensor((y - self.mean_) / self.std_, dtype=torch.float64).unsqueeze(1)
        parameters = list(self.net_.parameters())

        def objective():
            loss = torch.mean((self.net_(X) - Y) ** 2)
            if self.weight_decay:
                loss = loss + self.weight_decay * sum((p**2).sum() for p in parameters)
            return loss

        minimize(parameters, objective, self.steps, normalise=True, tolerance=1e-32)
        return self

    def predict(self, X):
        with torch.no_grad():
            return self.net_(torch.as_tensor(X, dtype=torch.float64)).squeeze(1).numpy() * self.std_ + self.mean_


def n_parameters_kan(n_in: int, hidden: int, grid: int, k: int = 3) -> int:
    """Trainable numbers of KAN([n_in, hidden, 1]): per edge G + k coefficients and 2 scales."""
    edges = n_in * hidden + hidden
    return edges * (grid + k + 2)


def candidates(n_features: int, steps: int, seed: int) -> dict:
    kan = GridSearchCV(
        KANRegressor(steps=steps, opt="LBFGS", lr=1.0, batch_size=-1, n_iter_no_change=5, random_state=seed),
        {"hidden_width": [(2,), (5,)], "early_stopping": [False, True], "grid": [(3, 6)]}, cv=3,
    )
    mlp = GridSearchCV(
        make_pipeline(StandardScaler(), MLPRegressor(max_iter=2000, early_stopping=False, random_state=seed)),
        {"mlpregressor__hidden_layer_sizes": [(32,), (64, 64)], "mlpregressor__alpha": [1e-4, 1e-1]}, cv=3,
    )
    # the torch MLP's width gives it about the parameters of the KAN [n, 5, 1] at grid 6
    width = max(2, round(n_parameters_kan(n_features, 5, 6) / (n_features + 2)))
    torch_mlp = GridSearchCV(
        make_pipeline(StandardScaler(), TorchMLP(hidden=(width,), steps=2 * steps, random_state=seed)),
        {"torchmlp__weight_decay": [0.0, 1e-4, 1e-3, 1e-2]}, cv=3,
    )
    return {"KANRegressor": kan, "MLPRegressor (sklearn)": mlp, f"torch MLP [{n_features}, {width}, 1], LBFGS": torch_mlp}


def defaults_table(seeds: list[int]) -> str:
    """KANClassifier() / KANRegressor() against MLPClassifier() / MLPRegressor(), all at their defaults."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    tables = {
        "digits": (load_digits(return_X_y=True), "classifier"),
        "iris": (load_iris(return_X_y=True), "classifier"),
        "wine": (load_wine(return_X_y=True), "classifier"),
        "breast_cancer": (load_breast_cancer(return_X_y=True), "classifier"),
        "diabetes": (load_diabetes(return_X_y=True), "regressor"),
        "Friedman #1 (2000 rows, noise 1)": (make_friedman1(n_samples=2000, noise=1.0, random_state=0), "regressor"),
    }
    rows = []
    for name, ((X, y), kind) in tables.items():
        scores: dict[str, list[tuple[float, float]]] = {"kan": [], "mlp": []}
        for seed in seeds:
            split = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y if kind == "classifier" else None)
            X_train, X_test, y_train, y_test = split
            models = ({"kan": KANClassifier(random_state=seed), "mlp": MLPClassifier(random_state=seed)}
                      if kind == "classifier" else
                      {"kan": KANRegressor(random_state=seed), "mlp": MLPRegressor(random_state=seed)})
            for key, model in models.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)  # MLP's default 200 epochs
                    begin = time.perf_counter()
                    model.fit(X_train, y_train)
                    seconds = time.perf_counter() - begin
                scores[key].append((model.score(X_test, y_test), seconds))
        kan = [statistics.median(v[i] for v in scores["kan"]) for i in (0, 1)]
        mlp = [statistics.median(v[i] for v in scores["mlp"]) for i in (0, 1)]
        metric = "accuracy" if kind == "classifier" else "R^2"
        difference = (f"{100 * (kan[0] - mlp[0]):+.1f} points" if kind == "classifier" else f"{kan[0] - mlp[0]:+.3f}")
        rows.append([name, metric, f"{kan[0]:.3f}", f"{mlp[0]:.3f}", difference, f"{kan[1]:.2f}", f"{mlp[1]:.2f}",
                     f"{kan[1] / mlp[1]:.1f}x"])
    return markdown_table(["table", "metric", "KAN (default)", "MLP (default)", "KAN - MLP", "KAN fit s", "MLP fit s",
                           "time ratio"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tuned", action="store_true", help="also the tuned comparison (minutes)")
    parser.add_argument("--steps", type=int, default=50, help="--tuned: LBFGS steps per KAN grid stage (MLP: twice)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    torch_line = f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}"
    text = (
        "## kanlab's estimators and scikit-learn's MLPs at their defaults\n\n"
        f"`.venv/bin/python benchmarks/bench_sklearn.py`: {torch_line}; medians over seeds {args.seeds}; raw "
        "features, 70 / 30 split (stratified for classes); `KANClassifier()` / `KANRegressor()` against "
        "`MLPClassifier()` / `MLPRegressor()`, each with only `random_state` set.\n\n" + defaults_table(seeds)
    )
    print(text)
    if not args.tuned:
        write_section("sklearn", text)
        return
    datasets = {
        "diabetes (442 x 10)": load_diabetes(return_X_y=True),
        "Friedman #1 (2000 x 10, noise 1)": make_friedman1(n_samples=2000, noise=1.0, random_state=0),
    }
    sections = []
    for data_name, (X, y) in datasets.items():
        results: dict[str, list] = {}
        for seed in seeds:
            X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed)
            for name, search in candidates(X.shape[1], args.steps, seed).items():  # interleaved per seed
                begin = time.perf_counter()
                search.fit(X_train, y_train)
                seconds = time.perf_counter() - begin
                pred = search.predict(X_test)
                results.setdefault(name, []).append(
                    (r2_score(y_test, pred), mean_squared_error(y_test, pred) ** 0.5, seconds, search.best_params_)
                )
        rows = []
        for name, runs in results.items():
            median = lambda i: statistics.median(run[i] for run in runs)  # noqa: E731
            rows.append([name, f"{median(0):.3f}", f"{median(1):.3g}", f"{median(2):.1f}", str(runs[0][3])])
        sections.append(f"### {data_name}\n\n" + markdown_table(
            ["model", "test R^2", "test RMSE", "search + refit s", "chosen (seed 0)"], rows))
    text += (
        "\n\n## KANRegressor vs MLPs on tabular regression, tuned\n\n"
        f"`.venv/bin/python benchmarks/bench_sklearn.py`: {torch_line}; medians over seeds {args.seeds}; "
        "each model tuned by a 4-setting GridSearchCV (3 folds) on 75% of the rows, tested on the rest.\n\n"
        + "\n\n".join(sections)
    )
    print(text[text.index("## KANRegressor vs MLPs on tabular regression, tuned"):])
    write_section("sklearn", text)


if __name__ == "__main__":
    main()
