"""KANRegressor against scikit-learn's MLPRegressor and a KAN-sized torch MLP, with the same care.

Data: scikit-learn's bundled diabetes table (442 rows, 10 features) and Friedman #1
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
from sklearn.datasets import load_diabetes, make_friedman1
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).parent))
from common import markdown_table, write_section  # noqa: E402

from kanlab.experiments.common import minimize  # noqa: E402
from kanlab.sklearn import KANRegressor  # noqa: E402


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
        KANRegressor(steps=steps, random_state=seed),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=50, help="LBFGS steps per KAN grid stage (MLP: twice)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
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
    torch_line = f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}"
    text = (
        "## KANRegressor vs MLPs on tabular regression\n\n"
        f"`.venv/bin/python benchmarks/bench_sklearn.py`: {torch_line}; medians over seeds {args.seeds}; "
        "each model tuned by a 4-setting GridSearchCV (3 folds) on 75% of the rows, tested on the rest.\n\n"
        + "\n\n".join(sections)
    )
    print(text)
    write_section("sklearn", text)


if __name__ == "__main__":
    main()
