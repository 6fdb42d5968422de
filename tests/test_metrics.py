"""Metrics against scipy / scikit-learn on small random arrays, hand-computed cases, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from ptransfer import metrics


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- regression


@pytest.mark.parametrize("trial", range(5))
def test_spearman_matches_scipy_with_ties(rng, trial):
    y_true = np.round(rng.normal(size=40), 1)  # rounding creates ties
    y_pred = np.round(y_true + rng.normal(size=40), 1)
    assert metrics.spearman(y_true, y_pred) == pytest.approx(
        stats.spearmanr(y_true, y_pred).statistic, abs=1e-12
    )


@pytest.mark.parametrize("trial", range(5))
def test_pearson_matches_scipy(rng, trial):
    y_true, y_pred = rng.normal(size=30), rng.normal(size=30)
    assert metrics.pearson(y_true, y_pred) == pytest.approx(
        stats.pearsonr(y_true, y_pred).statistic, abs=1e-12
    )


def test_mse_matches_sklearn(rng):
    y_true, y_pred = rng.normal(size=25), rng.normal(size=25)
    assert metrics.mse(y_true, y_pred) == pytest.approx(skm.mean_squared_error(y_true, y_pred), rel=1e-12)


def test_mse_hand_computed():
    assert metrics.mse([1.0, 2.0, 3.0], [1.0, 0.0, 6.0]) == pytest.approx((0 + 4 + 9) / 3)


def test_correlations_hand_computed():
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # monotone
    assert metrics.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


@pytest.mark.parametrize("name", ["spearman", "pearson"])
@pytest.mark.parametrize("constant", [[0.1, 0.1, 0.1], [5.0, 5.0, 5.0]])
def test_correlation_of_constant_is_nan(name, constant):
    fn = getattr(metrics, name)
    assert math.isnan(fn(constant, [1.0, 2.0, 3.0]))
    assert math.isnan(fn([1.0, 2.0, 3.0], constant))


def test_correlation_of_single_row_is_nan():
    assert math.isnan(metrics.pearson([1.0], [2.0]))


@pytest.mark.parametrize("k", [None, 1, 5, 17])
def test_ndcg_matches_sklearn_with_shifted_relevance(rng, k):
    y_true = rng.normal(size=30)
    y_pred = np.round(y_true + rng.normal(size=30), 0)  # coarse rounding: many tied predictions
    expected = skm.ndcg_score([y_true - y_true.min()], [y_pred], k=k)
    assert metrics.ndcg(y_true, y_pred, k=k) == pytest.approx(expected, rel=1e-12)


def test_ndcg_hand_computed():
    # relevance = y_true - min = [2, 1, 0]; ideal DCG = 2 + 1/log2(3).
    ideal = 2.0 + 1.0 / math.log2(3)
    assert metrics.ndcg([3.0, 2.0, 1.0], [0.9, 0.5, 0.1]) == pytest.approx(1.0)
    reversed_dcg = 0.0 + 1.0 / math.log2(3) + 2.0 / math.log2(4)
    assert metrics.ndcg([3.0, 2.0, 1.0], [0.1, 0.5, 0.9]) == pytest.approx(reversed_dcg / ideal)
    # k=1, all predictions tied: the top slot's gain is the mean relevance, 1.
    assert metrics.ndcg([3.0, 2.0, 1.0], [0.0, 0.0, 0.0], k=1) == pytest.approx(1.0 / 2.0)


def test_ndcg_ties_do_not_depend_on_input_order():
    y_true, y_pred = np.array([5.0, 1.0, 3.0, 2.0]), np.array([1.0, 1.0, 0.0, 2.0])
    order = np.array([2, 0, 3, 1])
    assert metrics.ndcg(y_true, y_pred, k=2) == pytest.approx(metrics.ndcg(y_true[order], y_pred[order], k=2))


def test_ndcg_of_constant_truth_is_nan():
    assert math.isnan(metrics.ndcg([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_ndcg_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        metrics.ndcg([1.0, 2.0], [1.0, 2.0], k=k)


# ----------------------------------------------------------------------------- classification


def test_accuracy_matches_sklearn(rng):
    y_true, y_pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))


def test_macro_f1_matches_sklearn(rng):
    y_true, y_pred = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
    expected = skm.f1_score(y_true, y_pred, average="macro")
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx(expected, rel=1e-12)


def test_macro_f1_skips_classes_absent_from_both_inputs(rng):
    y_true, y_pred = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
    expected = skm.f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro")
    assert metrics.macro_f1(y_true, y_pred, labels=[0, 1, 2, 3]) == pytest.approx(expected, rel=1e-12)


def test_macro_f1_hand_computed():
    # class 0: TP=1 FP=0 FN=1 -> 2/3; class 1: TP=1 FP=1 FN=0 -> 2/3; class 2: TP=1 -> 1.
    assert metrics.macro_f1([0, 0, 1, 2], [0, 1, 1, 2]) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # A listed class only predicted (never true) counts as F1 = 0.
    assert metrics.macro_f1([0, 0], [0, 1], labels=[0, 1]) == pytest.approx((2 / 3 + 0) / 2)


def test_roc_auc_ovr_matches_sklearn(rng):
    y_true = np.tile(np.arange(4), 15)
    proba = _softmax(rng.normal(size=(60, 4)) + 1.5 * np.eye(4)[y_true])
    expected = skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro")
    assert metrics.roc_auc_ovr(y_true, proba) == pytest.approx(expected, rel=1e-12)


def test_roc_auc_binary_equals_binary_auc(rng):
    y_true = rng.integers(0, 2, 50)
    positive = np.round(rng.uniform(size=50), 1)  # ties count one half
    proba = np.column_stack([1 - positive, positive])
    assert metrics.roc_auc_ovr(y_true, proba) == pytest.approx(skm.roc_auc_score(y_true, positive))


def test_roc_auc_skips_classes_absent_from_truth(rng):
    y_true = rng.integers(0, 2, 40)  # class 2 never occurs
    proba = _softmax(rng.normal(size=(40, 3)))
    per_class = [skm.roc_auc_score(y_true == c, proba[:, c]) for c in (0, 1)]
    assert metrics.roc_auc_ovr(y_true, proba) == pytest.approx(np.mean(per_class), rel=1e-12)


def test_roc_auc_with_labels_maps_columns():
    y_true = np.array([5, 5, 9, 9])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    assert metrics.roc_auc_ovr(y_true, proba, labels=[5, 9]) == pytest.approx(1.0)


def test_roc_auc_single_class_is_nan():
    assert math.isnan(metrics.roc_auc_ovr([1, 1, 1], np.full((3, 2), 0.5)))


# ----------------------------------------------------------------------------- registry


def test_registry_is_consistent():
    names = metrics.METRICS["regression"] + metrics.METRICS["classification"]
    assert sorted(names) == sorted(metrics.HIGHER_IS_BETTER)
    assert metrics.HIGHER_IS_BETTER["mse"] is False
    assert metrics.HIGHER_IS_BETTER["spearman"] is True


def test_score_regression_dispatch(rng):
    y_true, y_pred = rng.normal(size=20), rng.normal(size=20)
    for name in metrics.METRICS["regression"]:
        assert metrics.score(name, y_true, y_pred) == getattr(metrics, name)(y_true, y_pred)


def test_score_classification_takes_argmax(rng):
    y_true = np.tile(np.arange(3), 10)
    proba = _softmax(rng.normal(size=(30, 3)))
    hard = proba.argmax(axis=1)
    assert metrics.score("accuracy", y_true, proba) == metrics.accuracy(y_true, hard)
    assert metrics.score("macro_f1", y_true, proba) == metrics.macro_f1(y_true, hard)
    assert metrics.score("roc_auc", y_true, proba) == metrics.roc_auc_ovr(y_true, proba)
    assert metrics.score("accuracy", y_true, hard) == metrics.accuracy(y_true, hard)  # hard labels


def test_score_maps_columns_through_labels():
    proba = np.array([[0.8, 0.2], [0.1, 0.9]])
    assert metrics.score("accuracy", [3, 7], proba, labels=[3, 7]) == 1.0


# ----------------------------------------------------------------------------- bad input


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="y_true has 3 rows but y_pred has 2"):
        metrics.spearman([1.0, 2.0, 3.0], [1.0, 2.0])


def test_nan_is_an_error_naming_the_row():
    with pytest.raises(ValueError, match="y_pred has NaN/inf at row 1"):
        metrics.pearson([1.0, 2.0, 3.0], [1.0, np.nan, 3.0])


def test_two_dimensional_input_is_an_error():
    with pytest.raises(ValueError, match="y_true must be 1-D"):
        metrics.mse(np.zeros((2, 2)), np.zeros(4))


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="y_true is empty"):
        metrics.mse([], [])


def test_fractional_labels_are_an_error():
    with pytest.raises(ValueError, match="row 1 is 1.5"):
        metrics.accuracy([0, 1.5], [0, 1])


def test_proba_with_wrong_rows_is_an_error():
    with pytest.raises(ValueError, match="proba must be N x C with N = 3"):
        metrics.roc_auc_ovr([0, 1, 0], np.zeros((2, 2)))


def test_proba_with_nan_is_an_error():
    with pytest.raises(ValueError, match="proba has NaN/inf at row 0"):
        metrics.roc_auc_ovr([0, 1], np.array([[np.nan, 1.0], [0.5, 0.5]]))


def test_label_outside_labels_is_an_error():
    with pytest.raises(ValueError, match=r"label\(s\) \[4\] not in labels"):
        metrics.roc_auc_ovr([0, 4], np.full((2, 2), 0.5))


def test_labels_and_columns_disagree_is_an_error():
    with pytest.raises(ValueError, match="labels has 3 classes but proba has 2 columns"):
        metrics.roc_auc_ovr([0, 1], np.full((2, 2), 0.5), labels=[0, 1, 2])


def test_unknown_metric_is_an_error():
    with pytest.raises(ValueError, match="unknown metric 'auprc'"):
        metrics.score("auprc", [0, 1], [0, 1])


def test_roc_auc_needs_probabilities():
    with pytest.raises(ValueError, match="proba must be N x C"):
        metrics.score("roc_auc", [0, 1], np.array([0, 1]))
