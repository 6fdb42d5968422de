"""LogisticProbe against scikit-learn's LogisticRegression on standardised features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ptransfer.heads import LogisticProbe
from ptransfer.metrics import score

CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
TIGHT = {"tol": 1e-10, "max_iter": 5000}  # converge fully so warm and cold starts agree


def make_data(n_train=120, n_features=6, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, n_features)) * 1.2
    scales = rng.uniform(0.5, 5.0, n_features)

    def draw(n):
        y = rng.integers(0, n_classes, n)
        return (centers[y] + rng.normal(size=(n, n_features)) * 1.5) * scales + 3.0, y

    (X, y), (X_val, y_val) = draw(n_train), draw(90)
    return X, y, X_val, y_val


def brute_force(X, y, X_val, y_val, metric):
    """sklearn per C (cold start); best validation score, ties -> smaller C."""
    scaler = StandardScaler().fit(X)
    scores = {}
    for C in CS:
        model = LogisticRegression(C=C, tol=TIGHT["tol"], max_iter=TIGHT["max_iter"])
        model.fit(scaler.transform(X), y)
        scores[C] = score(metric, y_val, model.predict_proba(scaler.transform(X_val)))
    best = max(scores.values())
    return min(C for C, s in scores.items() if abs(s - best) <= 1e-12 * abs(best)), scores


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "roc_auc"])
def test_chosen_c_and_scores_equal_brute_force(metric):
    X, y, X_val, y_val = make_data(seed=4)
    probe = LogisticProbe(Cs=CS, metric=metric, **TIGHT).fit(X, y, X_val, y_val)
    C, scores = brute_force(X, y, X_val, y_val, metric)
    assert probe.C_ == C and probe.selected_params_ == {"C": C}
    for c in CS:
        assert probe.val_scores_[c] == pytest.approx(scores[c], abs=1e-6)


def test_probabilities_equal_sklearn_for_the_chosen_c():
    X, y, X_val, y_val = make_data(seed=5)
    probe = LogisticProbe(Cs=CS, **TIGHT).fit(X, y, X_val, y_val)
    scaler = StandardScaler().fit(X)
    reference = LogisticRegression(C=probe.C_, **TIGHT).fit(scaler.transform(X), y)
    np.testing.assert_allclose(
        probe.predict_proba(X_val), reference.predict_proba(scaler.transform(X_val)), atol=1e-5
    )
    np.testing.assert_array_equal(probe.predict(X_val), reference.predict(scaler.transform(X_val)))


def test_classes_absent_from_train_get_a_zero_column():
    X, y, X_val, y_val = make_data(n_classes=3, seed=6)
    probe = LogisticProbe(Cs=CS, n_classes=5).fit(X, y, X_val, y_val)
    proba = probe.predict_proba(X_val)
    assert proba.shape == (X_val.shape[0], 5)
    np.testing.assert_array_equal(probe.classes_, np.arange(5))
    np.testing.assert_array_equal(proba[:, 3:], 0.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_n_classes_passed_to_fit_overrides_init():
    X, y, X_val, y_val = make_data(n_classes=2, seed=7)
    probe = LogisticProbe(Cs=CS, n_classes=2).fit(X, y, X_val, y_val, n_classes=4)
    assert probe.predict_proba(X_val).shape[1] == 4


def test_constant_feature_is_harmless():
    X, y, X_val, y_val = make_data(seed=8)
    X[:, 0] = 0.3
    proba = LogisticProbe(Cs=CS).fit(X, y, X_val, y_val).predict_proba(X_val)
    assert np.all(np.isfinite(proba))


def test_estimator_contract():
    probe = LogisticProbe(Cs=CS, seed=3)
    assert clone(probe).get_params() == probe.get_params()
    assert not [k for k in vars(probe) if k.endswith("_")]
    X, y, X_val, y_val = make_data()
    assert probe.fit(X, y, X_val, y_val) is probe


def test_non_convergence_is_counted_not_raised():
    X, y, X_val, y_val = make_data(seed=9)
    probe = LogisticProbe(Cs=(1e3,), max_iter=1).fit(X, y, X_val, y_val)
    assert probe.n_not_converged_ == 1


# ----------------------------------------------------------------------------- bad input


def test_single_training_class_is_an_error():
    X, y, X_val, y_val = make_data()
    with pytest.raises(ValueError, match="y holds a single class"):
        LogisticProbe().fit(X, np.zeros_like(y), X_val, y_val)


def test_label_beyond_n_classes_names_the_row():
    X, y, X_val, y_val = make_data(n_classes=3)
    y_val[5] = 3
    with pytest.raises(ValueError, match=r"y_val: row 5 has label 3, expected 0 \.\. 2"):
        LogisticProbe(n_classes=3).fit(X, y, X_val, y_val)


def test_negative_label_is_an_error():
    X, y, X_val, y_val = make_data()
    y[2] = -1
    with pytest.raises(ValueError, match="y: row 2 has label -1"):
        LogisticProbe().fit(X, y, X_val, y_val)


def test_fractional_label_is_an_error():
    X, y, X_val, y_val = make_data()
    y = y.astype(float)
    y[1] = 0.5
    with pytest.raises(ValueError, match="y must hold integer class indices; row 1"):
        LogisticProbe().fit(X, y, X_val, y_val)


def test_regression_metric_is_an_error():
    X, y, X_val, y_val = make_data()
    with pytest.raises(ValueError, match="LogisticProbe: metric 'spearman' is not one of"):
        LogisticProbe(metric="spearman").fit(X, y, X_val, y_val)


def test_bad_n_classes_is_an_error():
    X, y, X_val, y_val = make_data(n_classes=2)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2"):
        LogisticProbe(n_classes=1).fit(X, np.zeros_like(y), X_val, np.zeros_like(y_val))


def test_predict_proba_before_fit_is_an_error():
    with pytest.raises(NotFittedError):
        LogisticProbe().predict_proba(np.zeros((2, 2)))


def test_float32_features_use_a_float32_copy_and_match_sklearn_float64():
    # The working copy follows the features' precision; the reference is sklearn in float64.
    X, y, X_val, y_val = make_data(seed=6)
    X32, X_val32 = X.astype(np.float32), X_val.astype(np.float32)
    probe = LogisticProbe(Cs=CS, **TIGHT).fit(X32, y, X_val32, y_val)
    assert probe.dtype_ == np.float32 and probe.model_.coef_.dtype == np.float32
    assert LogisticProbe(Cs=CS, **TIGHT).fit(X, y, X_val, y_val).dtype_ == np.float64
    C, _ = brute_force(X, y, X_val, y_val, "accuracy")
    assert probe.C_ == C
    scaler = StandardScaler().fit(X)
    reference = LogisticRegression(C=C, **TIGHT).fit(scaler.transform(X), y)
    np.testing.assert_allclose(probe.predict_proba(X_val32),
                               reference.predict_proba(scaler.transform(X_val)), atol=1e-3)


def test_chunked_scoring_and_prediction_equal_one_chunk(monkeypatch):
    # Tiny chunks (2 rows of 6 features) against chunks larger than every split.
    import ptransfer.heads.standardize as standardize

    X, y, X_val, y_val = make_data(seed=7)
    whole = LogisticProbe(Cs=CS, **TIGHT).fit(X, y, X_val, y_val)
    expected = whole.predict_proba(X_val)
    monkeypatch.setattr(standardize, "CHUNK_ELEMENTS", 12)
    chunked = LogisticProbe(Cs=CS, **TIGHT).fit(X, y, X_val, y_val)
    assert chunked.val_scores_ == pytest.approx(whole.val_scores_, abs=1e-12)
    np.testing.assert_allclose(chunked.predict_proba(X_val), expected, atol=1e-10)
    scaler = StandardScaler().fit(X)
    np.testing.assert_allclose(
        standardize.fit_standardizer(X).transform(X_val.astype(np.float16), dtype=np.float32),
        scaler.transform(X_val.astype(np.float16).astype(np.float64)), atol=1e-5, rtol=1e-5)
