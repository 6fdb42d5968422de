"""RidgeProbe against scikit-learn's Ridge on the same standardised features."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from ptransfer.heads import DEFAULT_ALPHAS, RidgeProbe
from ptransfer.heads.backend import ArrayBackend
from ptransfer.metrics import HIGHER_IS_BETTER, score

ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


def make_data(n_train: int, n_features: int, seed: int = 0):
    """Features with different offsets and scales, a sparse linear signal and noise."""
    rng = np.random.default_rng(seed)
    offsets, scales = rng.normal(size=n_features) * 5, rng.uniform(0.1, 4.0, n_features)
    weights = rng.normal(size=n_features) * (rng.uniform(size=n_features) < 0.3)

    def draw(n):
        X = rng.normal(size=(n, n_features)) * scales + offsets
        return X, (X - offsets) / scales @ weights + rng.normal(size=n) * 2.0

    (X, y), (X_val, y_val) = draw(n_train), draw(80)
    return X, y, X_val, y_val


def brute_force_alpha(X, y, X_val, y_val, alphas, metric):
    """sklearn Ridge per alpha on StandardScaler features; best val score, ties -> larger alpha."""
    scaler = StandardScaler().fit(X)
    scores = {}
    for alpha in alphas:
        model = Ridge(alpha=alpha).fit(scaler.transform(X), y)
        scores[alpha] = score(metric, y_val, model.predict(scaler.transform(X_val)))
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    best = max(sign * s for s in scores.values())
    tied = [a for a, s in scores.items() if abs(sign * s - best) <= 1e-12 * abs(best)]
    return max(tied), scores


@pytest.mark.parametrize("n_train, n_features", [(150, 20), (30, 60)], ids=["N>D", "N<D"])
def test_predictions_equal_sklearn_ridge(n_train, n_features):
    X, y, X_val, y_val = make_data(n_train, n_features)
    probe = RidgeProbe(alphas=ALPHAS).fit(X, y, X_val, y_val)
    scaler = StandardScaler().fit(X)
    reference = Ridge(alpha=probe.alpha_).fit(scaler.transform(X), y)
    expected = reference.predict(scaler.transform(X_val))
    np.testing.assert_allclose(probe.predict(X_val), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(probe.coef_, reference.coef_, rtol=1e-6, atol=1e-9)
    assert probe.intercept_ == pytest.approx(y.mean())


@pytest.mark.parametrize("n_train, n_features", [(150, 20), (30, 60)], ids=["N>D", "N<D"])
@pytest.mark.parametrize("metric", ["spearman", "mse", "pearson", "ndcg"])
def test_chosen_alpha_equals_brute_force_loop(n_train, n_features, metric):
    X, y, X_val, y_val = make_data(n_train, n_features, seed=3)
    probe = RidgeProbe(alphas=ALPHAS, metric=metric).fit(X, y, X_val, y_val)
    alpha, scores = brute_force_alpha(X, y, X_val, y_val, ALPHAS, metric)
    assert probe.alpha_ == alpha
    assert probe.selected_params_ == {"alpha": alpha}
    for a in ALPHAS:
        assert probe.val_scores_[a] == pytest.approx(scores[a], rel=1e-6, abs=1e-9)


def test_ties_go_to_the_larger_alpha():
    # One feature: every alpha ranks the validation rows identically, so Spearman ties.
    rng = np.random.default_rng(1)
    X, X_val = rng.normal(size=(40, 1)), rng.normal(size=(20, 1))
    probe = RidgeProbe(alphas=ALPHAS).fit(X, X[:, 0] + rng.normal(size=40), X_val, X_val[:, 0])
    assert probe.alpha_ == max(ALPHAS)


def test_constant_feature_gives_no_nan_and_zero_weight():
    X, y, X_val, y_val = make_data(60, 8, seed=2)
    X[:, 3] = 0.1  # constant in train (0.1 is not exact in binary: centring must still be exact)
    X_val[:, 3] = np.linspace(-50, 50, X_val.shape[0])  # varies outside train
    probe = RidgeProbe(alphas=ALPHAS).fit(X, y, X_val, y_val)
    assert np.all(np.isfinite(probe.coef_)) and probe.coef_[3] == 0.0
    keep = [j for j in range(8) if j != 3]
    reduced = RidgeProbe(alphas=ALPHAS).fit(X[:, keep], y, X_val[:, keep], y_val)
    np.testing.assert_allclose(probe.predict(X_val), reduced.predict(X_val[:, keep]), rtol=1e-12)


def test_all_constant_features_predict_the_mean(caplog):
    X, X_val = np.ones((10, 3)), np.zeros((5, 3))
    y = np.arange(10.0)
    with caplog.at_level(logging.WARNING):
        probe = RidgeProbe(alphas=ALPHAS).fit(X, y, X_val, np.arange(5.0))
    np.testing.assert_allclose(probe.predict(X_val), 4.5)
    assert "every feature of X is constant" in caplog.text


def test_float16_features_are_accepted():
    X, y, X_val, y_val = make_data(100, 10)
    X, X_val = X.astype(np.float16), X_val.astype(np.float16)
    half = RidgeProbe(alphas=ALPHAS).fit(X, y, X_val, y_val)
    full = RidgeProbe(alphas=ALPHAS).fit(X.astype(np.float64), y, X_val.astype(np.float64), y_val)
    assert half.alpha_ == full.alpha_
    np.testing.assert_allclose(half.predict(X_val), full.predict(X_val.astype(np.float64)), rtol=1e-10)


def test_default_grid_and_estimator_contract():
    assert DEFAULT_ALPHAS[0] == pytest.approx(1e-3) and DEFAULT_ALPHAS[-1] == pytest.approx(1e4)
    probe = RidgeProbe(metric="pearson")
    assert clone(probe).get_params() == probe.get_params()
    assert not [k for k in vars(probe) if k.endswith("_")]
    X, y, X_val, y_val = make_data(50, 5)
    assert probe.fit(X, y, X_val, y_val) is probe


@pytest.mark.parametrize("n_train, n_features", [(150, 20), (30, 60)], ids=["N>D", "N<D"])
def test_torch_code_path_matches_numpy(monkeypatch, n_train, n_features):
    """The CUDA code path (torch float64), run on CPU tensors so it is tested without a GPU."""
    X, y, X_val, y_val = make_data(n_train, n_features)
    reference = RidgeProbe(alphas=ALPHAS).fit(X, y, X_val, y_val)

    def torch_on_cpu(self, device="cpu", owner="head"):
        self.device = torch.device("cpu")

    monkeypatch.setattr(ArrayBackend, "__init__", torch_on_cpu)
    probe = RidgeProbe(alphas=ALPHAS).fit(X, y, X_val, y_val)
    assert probe.alpha_ == reference.alpha_
    np.testing.assert_allclose(probe.coef_, reference.coef_, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    X, y, X_val, y_val = make_data(200, 40)
    cpu = RidgeProbe(alphas=ALPHAS).fit(X, y, X_val, y_val)
    gpu = RidgeProbe(alphas=ALPHAS, device="cuda").fit(X, y, X_val, y_val)
    assert gpu.alpha_ == cpu.alpha_
    np.testing.assert_allclose(gpu.predict(X_val), cpu.predict(X_val), rtol=1e-8)


# ----------------------------------------------------------------------------- bad input


def test_nan_in_features_names_the_row():
    X, y, X_val, y_val = make_data(30, 4)
    X[7, 2] = np.nan
    with pytest.raises(ValueError, match="X has NaN/inf at row 7"):
        RidgeProbe().fit(X, y, X_val, y_val)


def test_nan_in_targets_names_the_row():
    X, y, X_val, y_val = make_data(30, 4)
    y_val[4] = np.inf
    with pytest.raises(ValueError, match="y_val has NaN/inf at row 4"):
        RidgeProbe().fit(X, y, X_val, y_val)


def test_target_length_mismatch():
    X, y, X_val, y_val = make_data(30, 4)
    with pytest.raises(ValueError, match="y must be 1-D with 30 rows"):
        RidgeProbe().fit(X, y[:-1], X_val, y_val)


def test_validation_feature_count_mismatch():
    X, y, X_val, y_val = make_data(30, 4)
    with pytest.raises(ValueError, match="X_val has 3 features, expected 4"):
        RidgeProbe().fit(X, y, X_val[:, :3], y_val)


def test_one_dimensional_features_are_an_error():
    with pytest.raises(ValueError, match=r"X must be 2-D \(N x D\)"):
        RidgeProbe().fit(np.zeros(5), np.zeros(5), np.zeros((2, 1)), np.zeros(2))


def test_classification_metric_is_an_error():
    X, y, X_val, y_val = make_data(30, 4)
    with pytest.raises(ValueError, match="RidgeProbe: metric 'accuracy' is not one of"):
        RidgeProbe(metric="accuracy").fit(X, y, X_val, y_val)


@pytest.mark.parametrize("alphas", [(0.0, 1.0), (-1.0,), (), (1.0, 1.0)])
def test_bad_alpha_grid_is_an_error(alphas):
    X, y, X_val, y_val = make_data(30, 4)
    with pytest.raises(ValueError, match="RidgeProbe: .*alphas"):
        RidgeProbe(alphas=alphas).fit(X, y, X_val, y_val)


def test_predict_before_fit_is_an_error():
    with pytest.raises(NotFittedError, match="not fitted"):
        RidgeProbe().predict(np.zeros((2, 2)))


def test_predict_with_wrong_feature_count_is_an_error():
    X, y, X_val, y_val = make_data(30, 4)
    probe = RidgeProbe().fit(X, y, X_val, y_val)
    with pytest.raises(ValueError, match="X has 5 features, expected 4"):
        probe.predict(np.zeros((2, 5)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_an_error():
    X, y, X_val, y_val = make_data(30, 4)
    with pytest.raises(ValueError, match="CUDA is not available"):
        RidgeProbe(device="cuda").fit(X, y, X_val, y_val)


def test_unknown_device_is_an_error():
    X, y, X_val, y_val = make_data(30, 4)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda"):
        RidgeProbe(device="tpu").fit(X, y, X_val, y_val)
