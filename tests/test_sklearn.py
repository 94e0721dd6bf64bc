"""scikit-learn estimators: the conformance suite, Pipeline / GridSearchCV, pickle, formulas."""

import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from kanlab.sklearn import KANClassifier, KANRegressor  # noqa: E402

# The settings of the tests below that check the fit itself: full-batch LBFGS, no held-out rows.
FAST = dict(hidden_width=(4,), grid=(5,), steps=15, opt="LBFGS", lr=1.0, batch_size=-1, early_stopping=False,
            random_state=0)
LBFGS = dict(opt="LBFGS", lr=1.0, batch_size=-1, early_stopping=False)


# the defaults a user keeps (about 15 s for both estimators' ~55 checks)
@parametrize_with_checks([KANRegressor(), KANClassifier()])
def test_sklearn_conformance(estimator, check):
    check(estimator)


def test_defaults_are_general_choices():
    model = KANClassifier()
    assert (model.hidden_width, model.opt, model.batch_size, model.early_stopping) == ("auto", "Adam", "auto", True)
    from kanlab.sklearn import _hidden

    assert _hidden("auto", 4, 3) == [9] and _hidden("auto", 64, 10) == [32] and _hidden("auto", 1, 7) == [7] and _hidden("auto", 64, 40) == [40]


def test_classifier_defaults_on_digits_match_the_mlp():
    """scikit-learn's digits at the defaults: within a point of MLPClassifier() (its 96.9% on
    this split), in a couple of seconds."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    assert KANClassifier(random_state=0).fit(X_train, y_train).score(X_test, y_test) > 0.96


# What the conformance suite skips here, and why that does not apply:
# - array API input: the estimators compute with torch, not the array API (no
#   ``array_api_support`` tag), and scikit-learn only checks it with SCIPY_ARRAY_API=1.


def _regression_data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3, 5, size=(n, 2))
    y = 3.0 * X[:, 0] + 0.5 * X[:, 1] ** 2 + 10.0
    return X, y


def test_regressor_fits_raw_features_and_exposes_the_kan():
    X, y = _regression_data()
    model = KANRegressor(hidden_width=(3,), grid=(5,), steps=30, random_state=0, **LBFGS).fit(X, y)
    assert model.score(X, y) > 0.999
    assert model.module_.width_in == [2, 3, 1]
    assert len(model.loss_curve_) == 30 and model.n_iter_ == 30
    assert model.predict(X).shape == (200,)


def test_regressor_formula_in_original_units():
    X, y = _regression_data()
    model = KANRegressor(hidden_width=(1,), grid=(5,), steps=40, random_state=0, **LBFGS).fit(X, y)
    model.module_.auto_symbolic(lib=["x", "x^2"])
    (formula,) = model.symbolic_formula(var_names=["a", "b"], round_digits=None)
    import sympy

    fn = sympy.lambdify(sympy.symbols("a b"), formula, "numpy")
    X_new, _ = _regression_data(50, seed=1)
    # the formula is the fitted estimator in the original units, scaling included
    np.testing.assert_allclose(fn(X_new[:, 0], X_new[:, 1]), model.predict(X_new), rtol=1e-9, atol=1e-9)
    assert {str(s) for s in formula.free_symbols} == {"a", "b"}


def test_multi_output_regression():
    X, y = _regression_data()
    Y = np.stack([y, -2 * y + 1], axis=1)
    model = KANRegressor(hidden_width=(4,), grid=(5,), steps=30, random_state=0, **LBFGS).fit(X, Y)
    assert model.predict(X).shape == (200, 2)
    assert model.score(X, Y) > 0.99


def test_classifier_multiclass_and_binary():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = KANClassifier(hidden_width=(3,), grid=(3,), steps=30, random_state=0, **LBFGS).fit(X, names)
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert model.score(X, names) > 0.95
    binary = KANClassifier(hidden_width=(2,), grid=(3,), steps=20, random_state=0, **LBFGS).fit(X, y == 0)
    assert binary.predict_proba(X).shape == (150, 2) and binary.score(X, y == 0) == 1.0


def test_pipeline_grid_search_pickle_and_clone():
    X, y = _regression_data(120)
    pipe = make_pipeline(StandardScaler(), KANRegressor(hidden_width=(2,), grid=(3,), steps=10, random_state=0, **LBFGS))
    search = GridSearchCV(pipe, {"kanregressor__grid": [(3,), (3, 5)]}, cv=2).fit(X, y)
    assert search.best_params_["kanregressor__grid"] in [(3,), (3, 5)]
    restored = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_array_equal(restored.predict(X), search.best_estimator_.predict(X))
    fresh = clone(search.best_estimator_)
    assert not hasattr(fresh[-1], "module_")


def test_grid_extension_schedule_and_bad_parameters():
    X, y = _regression_data(100)
    model = KANRegressor(hidden_width=(2,), grid=(3, 6), steps=5, random_state=0, **LBFGS).fit(X, y)
    assert model.module_.grid == 6 and len(model.loss_curve_) == 10
    for bad, match in (({"grid": 0}, "grid"), ({"hidden_width": (0,)}, "hidden_width"), ({"opt": "SGD"}, "opt"),
                       ({"dtype": "float16"}, "dtype")):
        with pytest.raises(ValueError, match=match):
            KANRegressor(**{**FAST, **bad}).fit(X, y)


def test_early_stopping_holds_out_rows_and_keeps_the_best_stage_state():
    X, y = _regression_data(200)
    rng = np.random.default_rng(3)
    noisy = y + rng.normal(scale=3.0, size=y.shape)
    model = KANRegressor(hidden_width=(5,), grid=(10,), steps=40, opt="LBFGS", lr=1.0, batch_size=-1,
                         early_stopping=True, validation_fraction=0.25, n_iter_no_change=3, tol=0.0,
                         update_grid=False, random_state=0).fit(X, noisy)
    assert len(model.validation_loss_) == model.n_iter_ < 40  # stopped early
    best = int(np.argmin(model.validation_loss_))
    assert best == len(model.validation_loss_) - 1 - 3
    with pytest.raises(ValueError, match="validation_fraction"):
        KANRegressor(**{**FAST, "early_stopping": True, "validation_fraction": 1.5}).fit(X, y)
