"""StreamingRidgeClassifier fed in chunks equals a one-shot sklearn RidgeClassifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import RidgeClassifier
from sklearn.preprocessing import StandardScaler

from ptransfer.heads import StreamingRidgeClassifier, StreamingScorer
from ptransfer.heads.backend import ArrayBackend

ALPHAS = (1e-2, 1.0, 100.0, 1e4)


def make_data(n=1200, n_features=10, n_classes=3, offset=5.0, seed=0):
    """Class-shifted features with varied scales, a constant column and some rows labelled -1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.normal(size=(n, n_features)) * rng.uniform(0.3, 3.0, n_features) + offset
    X[:, :n_classes] += 1.2 * np.eye(n_classes)[y]
    X[:, -1] = 0.7  # constant: standardises to zero, must not produce NaN
    y[rng.choice(n, n // 20, replace=False)] = -1
    return X.astype(np.float32), y


def fit_in_chunks(X, y, n_chunks=5, **kwargs):
    clf = StreamingRidgeClassifier(alphas=ALPHAS, **kwargs)
    for rows in np.array_split(np.arange(X.shape[0]), n_chunks):
        clf.partial_fit(X[rows], y[rows])
    return clf.finalize()


def sklearn_reference(X, y, alpha):
    labelled = y >= 0
    X64 = X.astype(np.float64)
    scaler = StandardScaler().fit(X64[labelled])
    model = RidgeClassifier(alpha=alpha).fit(scaler.transform(X64[labelled]), y[labelled])
    return model, scaler


@pytest.mark.parametrize("offset", [5.0, 1e4], ids=["offset5", "offset1e4"])
def test_chunked_fit_equals_one_shot_sklearn_ridge_classifier(offset):
    X, y = make_data(offset=offset)
    clf = fit_in_chunks(X, y, n_classes=3)
    X_eval, _ = make_data(n=300, offset=offset, seed=1)
    path = clf.decision_path(X_eval)
    assert path.shape == (len(ALPHAS), 300, 3)
    for index, alpha in enumerate(ALPHAS):
        model, scaler = sklearn_reference(X, y, alpha)
        expected = model.decision_function(scaler.transform(X_eval.astype(np.float64)))
        np.testing.assert_allclose(path[index], expected, rtol=1e-7, atol=1e-8)
        clf.select(index)
        np.testing.assert_array_equal(
            clf.predict(X_eval), model.predict(scaler.transform(X_eval.astype(np.float64)))
        )
    assert np.all(clf.coef_path_[:, -1, :] == 0.0)  # the constant column


def test_two_classes_predict_like_sklearn():
    X, y = make_data(n_classes=2, seed=2)
    clf = fit_in_chunks(X, y, n_classes=2).set_alpha(1.0)
    model, scaler = sklearn_reference(X, y, 1.0)
    Z = scaler.transform(X.astype(np.float64))
    np.testing.assert_array_equal(clf.predict(X), model.predict(Z))
    # +-1 targets: the two outputs are exact opposites, and class 1's is sklearn's decision.
    decision = clf.decision_function(X)
    np.testing.assert_allclose(decision[:, 0], -decision[:, 1], atol=1e-12)
    np.testing.assert_allclose(decision[:, 1], model.decision_function(Z), rtol=1e-7, atol=1e-8)


def test_chunking_does_not_change_the_solution():
    X, y = make_data(seed=3)
    one = fit_in_chunks(X, y, n_chunks=1, n_classes=3)
    many = fit_in_chunks(X, y, n_chunks=7, n_classes=3)
    np.testing.assert_allclose(many.coef_path_, one.coef_path_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(many.intercept_path_, one.intercept_path_, rtol=1e-12)
    assert many.n_seen_ == one.n_seen_ == int(np.sum(y >= 0))
    assert many.n_ignored_ == int(np.sum(y < 0))


def test_float16_chunks_match_sklearn_on_the_same_values():
    X, y = make_data(seed=4)
    X16 = X.astype(np.float16)
    clf = fit_in_chunks(X16, y, n_classes=3).set_alpha(100.0)
    model, scaler = sklearn_reference(X16, y, 100.0)
    expected = model.decision_function(scaler.transform(X16.astype(np.float64)))
    np.testing.assert_allclose(clf.decision_function(X16), expected, rtol=1e-7, atol=1e-8)


def test_memory_does_not_grow_with_rows():
    X, y = make_data(n=600, seed=5)
    clf = StreamingRidgeClassifier(alphas=ALPHAS, n_classes=3).partial_fit(X, y)
    shapes = {k: v.shape for k, v in clf.sums_.items()}
    clf.partial_fit(X, y)
    assert {k: v.shape for k, v in clf.sums_.items()} == shapes == {
        "xx": (10, 10), "xy": (10, 3), "x": (10,), "y": (3,)}


def test_scorer_accumulates_per_alpha_accuracy_over_chunks():
    X, y = make_data(seed=6)
    clf = fit_in_chunks(X, y, n_classes=3)
    X_val, y_val = make_data(n=400, seed=7)
    scorer = StreamingScorer(len(ALPHAS))
    for rows in np.array_split(np.arange(400), 3):
        scorer.update(clf.decision_path(X_val[rows]), y_val[rows])
    labelled = y_val >= 0
    expected = [np.mean(clf.decision_path(X_val)[a][labelled].argmax(1) == y_val[labelled])
                for a in range(len(ALPHAS))]
    np.testing.assert_allclose(scorer.accuracy(), expected, rtol=1e-12)
    assert scorer.n_ == int(labelled.sum())


def test_select_and_set_alpha_agree():
    X, y = make_data(seed=8)
    clf = fit_in_chunks(X, y, n_classes=3)
    by_index = clf.select(2).decision_function(X)
    assert clf.selected_params_ == {"alpha": 100.0} and clf.alpha_index_ == 2
    np.testing.assert_array_equal(clf.set_alpha(100.0).decision_function(X), by_index)
    np.testing.assert_allclose(by_index, clf.decision_path(X)[2], rtol=1e-12)


def test_estimator_contract():
    clf = StreamingRidgeClassifier(ALPHAS, 3)
    assert clone(clf).get_params() == {"alphas": ALPHAS, "n_classes": 3, "device": "cpu"}
    assert not [k for k in vars(clf) if k.endswith("_")]


def test_torch_code_path_matches_numpy(monkeypatch):
    """The CUDA code path (torch float64), run on CPU tensors so it is tested without a GPU."""
    X, y = make_data(seed=10)
    reference = fit_in_chunks(X, y, n_classes=3)

    def torch_on_cpu(self, device="cpu", owner="head"):
        self.device = torch.device("cpu")

    monkeypatch.setattr(ArrayBackend, "__init__", torch_on_cpu)
    clf = fit_in_chunks(X, y, n_classes=3)
    assert torch.is_tensor(clf.sums_["xx"])
    np.testing.assert_allclose(clf.coef_path_, reference.coef_path_, rtol=1e-9, atol=1e-12)


def test_all_constant_features_predict_the_majority_class():
    X, y = np.ones((10, 3)), np.array([0, 1, 1, 1, 2, 2, 0, 1, 1, 1])
    clf = StreamingRidgeClassifier((1.0,), 3).partial_fit(X, y).finalize().select(0)
    np.testing.assert_array_equal(clf.predict(X), 1)
    np.testing.assert_allclose(clf.decision_function(X)[0], [-0.6, 0.2, -0.6])  # 2 p - 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    X, y = make_data(seed=9)
    cpu = fit_in_chunks(X, y, n_classes=3)
    gpu = fit_in_chunks(X, y, n_classes=3, device="cuda")
    np.testing.assert_allclose(gpu.coef_path_, cpu.coef_path_, rtol=1e-7, atol=1e-10)


# ----------------------------------------------------------------------------- bad input


def test_finalize_without_rows_is_an_error():
    clf = StreamingRidgeClassifier(ALPHAS, 3).partial_fit(np.zeros((3, 2)), np.full(3, -1))
    with pytest.raises(ValueError, match="no labelled rows seen"):
        clf.finalize()


def test_feature_count_change_between_chunks_is_an_error():
    clf = StreamingRidgeClassifier(ALPHAS, 3).partial_fit(np.zeros((3, 4)), np.zeros(3, int))
    with pytest.raises(ValueError, match="X has 5 features, expected 4"):
        clf.partial_fit(np.zeros((3, 5)), np.zeros(3, int))


def test_label_out_of_range_names_the_row():
    with pytest.raises(ValueError, match=r"y: row 1 has label 3, expected -1 \.\. 2"):
        StreamingRidgeClassifier(ALPHAS, 3).partial_fit(np.zeros((2, 2)), np.array([0, 3]))


def test_nan_in_chunk_names_the_row():
    X = np.zeros((4, 2))
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="X has NaN/inf at row 2"):
        StreamingRidgeClassifier(ALPHAS, 3).partial_fit(X, np.zeros(4, int))


def test_bad_n_classes_is_an_error():
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        StreamingRidgeClassifier(ALPHAS, 1).partial_fit(np.zeros((2, 2)), np.zeros(2, int))


def test_alpha_outside_grid_is_an_error():
    X, y = make_data(n=100)
    clf = fit_in_chunks(X, y, n_classes=3)
    with pytest.raises(ValueError, match="alpha 3.0 is not in the grid"):
        clf.set_alpha(3.0)
    with pytest.raises(ValueError, match=r"alpha_index must be in 0 \.\. 3"):
        clf.select(4)


def test_use_before_finalize_is_an_error():
    with pytest.raises(NotFittedError, match="not finalized"):
        StreamingRidgeClassifier(ALPHAS, 3).decision_path(np.zeros((2, 2)))


def test_predict_before_select_is_an_error():
    X, y = make_data(n=100)
    with pytest.raises(NotFittedError, match="no alpha selected"):
        fit_in_chunks(X, y, n_classes=3).predict(X)


def test_scorer_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="n_alphas x N x C with n_alphas = 4"):
        StreamingScorer(4).update(np.zeros((3, 5, 2)), np.zeros(5, int))
