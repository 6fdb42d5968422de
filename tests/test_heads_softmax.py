"""SoftmaxProbe: early stopping restores the best epoch, determinism, float16, ignored rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ptransfer.heads import SoftmaxProbe

FAST = {"lr": 0.05, "batch_size": 128, "max_epochs": 12, "patience": 3}


def make_data(n_train=800, n_features=12, n_classes=3, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(n_features, n_classes))
    scales, offsets = rng.uniform(0.2, 3.0, n_features), rng.normal(size=n_features) * 4

    def draw(n):
        Z = rng.normal(size=(n, n_features))
        logits = Z @ weights + noise * rng.gumbel(size=(n, n_classes))
        return (Z * scales + offsets).astype(np.float32), logits.argmax(axis=1)

    (X, y), (X_val, y_val) = draw(n_train), draw(500)
    return X, y, X_val, y_val


def cross_entropy(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(proba[np.arange(y.size), y])))


def test_restored_weights_give_the_best_recorded_validation_loss():
    # Few rows, many features, a large step: validation loss bottoms out early, then rises.
    X, y, X_val, y_val = make_data(n_train=60, n_features=40, seed=1, noise=3.0)
    probe = SoftmaxProbe(weight_decays=(0.0,), lr=0.05, batch_size=8, max_epochs=25, patience=25)
    probe.fit(X, y, X_val, y_val)
    losses = probe.val_losses_[0.0]
    assert probe.best_epoch_ == int(np.argmin(losses)) + 1
    assert probe.best_epoch_ < len(losses)  # the last epoch was not the best one
    assert cross_entropy(probe.predict_proba(X_val), y_val) == pytest.approx(min(losses), rel=1e-5)
    assert cross_entropy(probe.predict_proba(X_val), y_val) < losses[-1]


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    X, y, X_val, y_val = make_data(n_train=60, n_features=40, seed=1, noise=3.0)
    probe = SoftmaxProbe(weight_decays=(0.0,), lr=0.05, batch_size=8, max_epochs=25, patience=2)
    probe.fit(X, y, X_val, y_val)
    assert probe.n_epochs_ == probe.best_epoch_ + 2 < 25
    assert len(probe.val_losses_[0.0]) == probe.n_epochs_


def test_two_fits_are_identical():
    X, y, X_val, y_val = make_data(seed=2)
    first = SoftmaxProbe(seed=5, **FAST).fit(X, y, X_val, y_val)
    second = SoftmaxProbe(seed=5, **FAST).fit(X, y, X_val, y_val)
    np.testing.assert_array_equal(first.weight_, second.weight_)
    np.testing.assert_array_equal(first.bias_, second.bias_)
    assert first.selected_params_ == second.selected_params_
    assert first.val_losses_ == second.val_losses_


def test_accuracy_matches_sklearn_logistic_regression():
    X, y, X_val, y_val = make_data(n_train=2000, seed=3)
    probe = SoftmaxProbe(**FAST).fit(X, y, X_val, y_val)
    scaler = StandardScaler().fit(X)
    reference = LogisticRegression(C=10.0).fit(scaler.transform(X), y)
    expected = reference.score(scaler.transform(X_val), y_val)
    assert np.mean(probe.predict(X_val) == y_val) == pytest.approx(expected, abs=0.02)
    np.testing.assert_allclose(probe.predict_proba(X_val).sum(axis=1), 1.0)


def test_weight_decay_chosen_by_validation_accuracy_at_best_epoch():
    X, y, X_val, y_val = make_data(seed=4)
    probe = SoftmaxProbe(weight_decays=(0.0, 1.0, 30.0), **FAST).fit(X, y, X_val, y_val)
    for wd, accuracy in probe.val_scores_.items():
        assert accuracy == probe.val_accuracies_[wd][probe.best_epochs_[wd] - 1]
    best = max(probe.val_scores_.values())
    assert probe.val_scores_[probe.weight_decay_] == best
    tied = [wd for wd, acc in probe.val_scores_.items() if acc == best]
    assert probe.weight_decay_ == max(tied)
    assert set(probe.selected_params_) == {"weight_decay", "epochs"}
    chosen_accuracy = np.mean(probe.predict(X_val) == y_val)
    assert chosen_accuracy == pytest.approx(probe.val_scores_[probe.weight_decay_], abs=1e-9)


def test_float16_features_train_like_float32():
    X, y, X_val, y_val = make_data(seed=5)
    X16, X_val16 = X.astype(np.float16), X_val.astype(np.float16)
    half = SoftmaxProbe(**FAST).fit(X16, y, X_val16, y_val)
    full = SoftmaxProbe(**FAST).fit(X16.astype(np.float32), y, X_val16.astype(np.float32), y_val)
    np.testing.assert_allclose(half.weight_, full.weight_, atol=1e-5)
    np.testing.assert_allclose(half.predict_proba(X_val16), full.predict_proba(X_val16), atol=1e-5)


def test_rows_labelled_minus_one_are_ignored():
    X, y, X_val, y_val = make_data(seed=6)
    # Junk rows (huge values) labelled -1, appended: they must not touch statistics or batches.
    X_junk = np.vstack([X, np.full((50, X.shape[1]), 1e4, dtype=np.float32)])
    y_junk = np.concatenate([y, np.full(50, -1)])
    X_val_junk = np.vstack([X_val, np.full((7, X.shape[1]), -1e4, dtype=np.float32)])
    y_val_junk = np.concatenate([y_val, np.full(7, -1)])
    clean = SoftmaxProbe(**FAST).fit(X, y, X_val, y_val)
    junk = SoftmaxProbe(**FAST).fit(X_junk, y_junk, X_val_junk, y_val_junk)
    np.testing.assert_array_equal(junk.weight_, clean.weight_)
    assert junk.n_ignored_ == 50 and junk.val_losses_ == clean.val_losses_


def test_n_classes_fixes_the_probability_columns():
    X, y, X_val, y_val = make_data(n_classes=3, seed=7)
    probe = SoftmaxProbe(n_classes=4, **FAST).fit(X, y, X_val, y_val)
    assert probe.predict_proba(X_val[:5]).shape == (5, 4)


def test_estimator_contract():
    probe = SoftmaxProbe(**FAST)
    assert clone(probe).get_params() == probe.get_params()
    assert not [k for k in vars(probe) if k.endswith("_")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    X, y, X_val, y_val = make_data(seed=8)
    cpu = SoftmaxProbe(**FAST).fit(X, y, X_val, y_val)
    gpu = SoftmaxProbe(device="cuda", **FAST).fit(X, y, X_val, y_val)
    np.testing.assert_allclose(gpu.predict_proba(X_val), cpu.predict_proba(X_val), atol=1e-3)


# ----------------------------------------------------------------------------- bad input


def test_label_below_minus_one_names_the_row():
    X, y, X_val, y_val = make_data()
    y[3] = -2
    with pytest.raises(ValueError, match="y: row 3 has label -2, expected >= -1"):
        SoftmaxProbe(**FAST).fit(X, y, X_val, y_val)


def test_nan_in_training_features_names_the_row():
    X, y, X_val, y_val = make_data()
    X[11, 0] = np.nan
    with pytest.raises(ValueError, match="X has NaN/inf at row 11"):
        SoftmaxProbe(**FAST).fit(X, y, X_val, y_val)


def test_nan_in_validation_features_names_the_row():
    X, y, X_val, y_val = make_data()
    X_val[4, 1] = np.inf
    with pytest.raises(ValueError, match="X_val has NaN/inf at row 4"):
        SoftmaxProbe(**FAST).fit(X, y, X_val, y_val)


def test_all_rows_ignored_is_an_error():
    X, y, X_val, y_val = make_data()
    with pytest.raises(ValueError, match="no labelled rows"):
        SoftmaxProbe(**FAST).fit(X, np.full_like(y, -1), X_val, y_val)


@pytest.mark.parametrize("setting", [{"batch_size": 0}, {"max_epochs": 1.5}, {"patience": -1}, {"lr": 0.0}])
def test_bad_training_settings_are_errors(setting):
    X, y, X_val, y_val = make_data(n_train=50)
    with pytest.raises(ValueError, match=f"SoftmaxProbe: {next(iter(setting))} must be"):
        SoftmaxProbe(**{**FAST, **setting}).fit(X, y, X_val, y_val)


def test_negative_weight_decay_is_an_error():
    X, y, X_val, y_val = make_data(n_train=50)
    with pytest.raises(ValueError, match="weight_decays must be finite and non-negative"):
        SoftmaxProbe(weight_decays=(-0.1,), **FAST).fit(X, y, X_val, y_val)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_an_error():
    X, y, X_val, y_val = make_data(n_train=50)
    with pytest.raises(ValueError, match="CUDA is not available"):
        SoftmaxProbe(device="cuda", **FAST).fit(X, y, X_val, y_val)


def test_predict_before_fit_is_an_error():
    with pytest.raises(NotFittedError):
        SoftmaxProbe().predict_proba(np.zeros((2, 2)))


def test_diverged_training_keeps_the_initial_weights_and_scores_nan(caplog):
    X, y, X_val, y_val = make_data(n_train=200)
    probe = SoftmaxProbe(weight_decays=(0.0,), lr=1e37, batch_size=64, max_epochs=2, patience=1)
    probe.fit(X, y, X_val, y_val)
    assert probe.selected_params_["epochs"] == 0 and np.isnan(probe.val_scores_[0.0])
    np.testing.assert_allclose(probe.predict_proba(X_val[:3]), 1.0 / 3.0)
    assert "never reached a finite validation loss" in caplog.text


def test_nan_in_prediction_features_names_the_row():
    X, y, X_val, y_val = make_data(n_train=200)
    probe = SoftmaxProbe(**FAST).fit(X, y, X_val, y_val)
    X_val[9, 2] = np.nan
    with pytest.raises(ValueError, match="X has NaN/inf at row 9"):
        probe.predict_proba(X_val)
