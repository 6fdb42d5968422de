"""Evaluation metrics: pure functions, numpy in, unrounded Python float out.

Conventions shared by every function:

- Inputs are 1-D arrays of equal length (``proba`` is N x C). A length mismatch, a wrong
  number of dimensions, an empty input or a NaN / inf value raises ``ValueError`` naming
  the argument (and the first bad row).
- A metric that is undefined for the given data returns ``nan`` instead of raising, so one
  degenerate evaluation set never aborts a grid:
  ``spearman`` / ``pearson`` when either input is constant (zero variance) or N < 2;
  ``ndcg`` when every ``y_true`` is equal (no relevance to rank);
  ``roc_auc_ovr`` when no class has both positives and negatives in ``y_true``.
- Classification labels are integers; ``labels`` fixes the class set (and, for
  ``roc_auc_ovr``, the meaning of the columns of ``proba``).

``score(name, y_true, pred)`` is the one entry point the cell uses: ``pred`` is N
predictions for regression metrics and N x C class probabilities for classification
metrics (columns = classes ``0 .. C-1`` unless ``labels`` says otherwise; argmax taken
where the metric needs hard predictions). ``accuracy`` and ``macro_f1`` also accept N hard
labels (for probes without probabilities); ``roc_auc`` needs probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def rankdata(values) -> np.ndarray:
    """scipy's average ranks, imported on first use: importing scipy.stats costs ~1 s, and
    keying or planning cells (which only need the metrics' directions) must not pay it."""
    from scipy.stats import rankdata as scipy_rankdata

    return scipy_rankdata(values)

METRICS: dict[str, list[str]] = {
    "regression": ["spearman", "pearson", "mse", "ndcg"],
    "classification": ["accuracy", "macro_f1", "roc_auc"],
}

HIGHER_IS_BETTER: dict[str, bool] = {
    "spearman": True,
    "pearson": True,
    "mse": False,
    "ndcg": True,
    "accuracy": True,
    "macro_f1": True,
    "roc_auc": True,
}

# metric -> (lowest, highest) value it can take; a difference of two values lies within
# +-(highest - lowest). mse is unbounded above.
RANGES: dict[str, tuple[float, float]] = {
    "spearman": (-1.0, 1.0),
    "pearson": (-1.0, 1.0),
    "mse": (0.0, float("inf")),
    "ndcg": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "macro_f1": (0.0, 1.0),
    "roc_auc": (0.0, 1.0),
}


# --------------------------------------------------------------------------- input checks


def _as_vector(values, name: str, dtype=np.float64) -> np.ndarray:
    """``values`` as a 1-D array (N); raises naming ``name`` on bad shape or non-finite rows."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    array = array.astype(dtype, copy=False)
    if np.issubdtype(array.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise ValueError(f"{name} has NaN/inf at row {int(bad[0])} ({bad.size} rows in all)")
    return array


def _pair(y_true, y_pred, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    true = _as_vector(y_true, "y_true", dtype)
    pred = _as_vector(y_pred, "y_pred", dtype)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} rows but y_pred has {pred.size}")
    return true, pred


def _as_labels(values, name: str) -> np.ndarray:
    """Integer class labels (N); floats are accepted only when they are whole numbers."""
    array = np.asarray(values)
    if array.ndim == 1 and array.size and not np.issubdtype(array.dtype, np.integer):
        as_float = _as_vector(array, name)
        if np.any(as_float != np.round(as_float)):
            row = int(np.flatnonzero(as_float != np.round(as_float))[0])
            raise ValueError(f"{name} must hold integer class labels; row {row} is {as_float[row]}")
        array = as_float
    return _as_vector(array, name, np.int64)


# --------------------------------------------------------------------------- regression


def pearson(y_true, y_pred) -> float:
    """Pearson correlation; nan when either input is constant or N < 2."""
    true, pred = _pair(y_true, y_pred)
    # Exact test for constant input: centring a constant can leave rounding noise that a
    # norm test would mistake for variance.
    if true.size < 2 or np.ptp(true) == 0.0 or np.ptp(pred) == 0.0:
        return float("nan")
    true_c = true - true.mean()
    pred_c = pred - pred.mean()
    norm = np.sqrt(np.dot(true_c, true_c) * np.dot(pred_c, pred_c))
    # Clip: rounding can push |r| a hair above 1 for (anti)collinear inputs.
    return float(np.clip(np.dot(true_c, pred_c) / norm, -1.0, 1.0))


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation (ties get average ranks); nan when either input is constant."""
    true, pred = _pair(y_true, y_pred)
    return pearson(rankdata(true), rankdata(pred))


def mse(y_true, y_pred) -> float:
    """Mean squared error."""
    true, pred = _pair(y_true, y_pred)
    return float(np.mean((true - pred) ** 2))


def _discounts(n: int, k: int | None) -> np.ndarray:
    """Position discounts 1 / log2(rank + 1) for ranks 1..n, zero beyond rank k (n)."""
    discount = 1.0 / np.log2(np.arange(n) + 2.0)
    if k is not None:
        discount[k:] = 0.0
    return discount


def ndcg(y_true, y_pred, k: int | None = None) -> float:
    """Normalised discounted cumulative gain of ranking by ``y_pred``, over the top ``k``.

    Convention (FLIP / ProteinGym style): the graded relevance of an item is its true value
    shifted to be non-negative, ``rel = y_true - min(y_true)`` (linear gain, no 2^rel - 1),
    discounted by ``1 / log2(rank + 1)``; ``k=None`` uses all N items. Items tied in
    ``y_pred`` share the average discount of the ranks their group spans, so the value does
    not depend on input order (it matches ``sklearn.metrics.ndcg_score``, ties averaged).
    nan when every ``y_true`` is equal (the ideal DCG is zero).
    """
    true, pred = _pair(y_true, y_pred)
    if k is not None and (int(k) != k or k < 1):
        raise ValueError(f"ndcg: k must be a positive integer or None, got {k!r}")
    relevance = true - true.min()
    discount = _discounts(true.size, None if k is None else int(k))
    ideal = float(np.dot(np.sort(relevance)[::-1], discount))
    if ideal == 0.0:
        return float("nan")
    # Groups of tied predictions in descending order; each group spans ranks [start, end).
    _, group_of_item, group_sizes = np.unique(-pred, return_inverse=True, return_counts=True)
    group_gain = np.bincount(group_of_item.ravel(), weights=relevance) / group_sizes
    cumulative = np.concatenate([[0.0], np.cumsum(discount)])
    ends = np.cumsum(group_sizes)
    group_discount = cumulative[ends] - cumulative[ends - group_sizes]
    return float(np.dot(group_gain, group_discount) / ideal)


# --------------------------------------------------------------------------- classification


def accuracy(y_true, y_pred) -> float:
    """Fraction of rows whose predicted label equals the true label."""
    true = _as_labels(y_true, "y_true")
    pred = _as_labels(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} rows but y_pred has {pred.size}")
    return float(np.mean(true == pred))


def macro_f1(y_true, y_pred, labels: Sequence[int] | None = None) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN).

    ``labels`` restricts the classes averaged over (default: every label seen in either
    input); rows whose labels are outside it only count as FP / FN of the listed classes.
    A listed class absent from both ``y_true`` and ``y_pred`` is skipped (its F1 is 0 / 0 and
    carries no information), so passing a task's full class list does not penalise a test
    set that lacks a class. sklearn equivalent: ``f1_score(average="macro")`` with
    ``labels`` restricted to the classes present.
    """
    true = _as_labels(y_true, "y_true")
    pred = _as_labels(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} rows but y_pred has {pred.size}")
    classes = np.union1d(true, pred) if labels is None else np.asarray(labels, dtype=np.int64)
    scores = []
    for label in classes:
        true_pos = np.sum((true == label) & (pred == label))
        denominator = np.sum(true == label) + np.sum(pred == label)  # = 2 TP + FP + FN
        if denominator:
            scores.append(2.0 * true_pos / denominator)
    return float(np.mean(scores)) if scores else float("nan")


def _binary_auc(is_positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties count one half)."""
    n_pos = int(is_positive.sum())
    n_neg = is_positive.size - n_pos
    ranks = rankdata(score)
    u_statistic = ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def roc_auc_ovr(y_true, proba, labels: Sequence[int] | None = None) -> float:
    """One-vs-rest ROC AUC, unweighted mean over classes.

    ``proba`` is N x C; column j scores class ``labels[j]`` (default ``labels = 0..C-1``).
    Rule for degenerate classes: a class absent from ``y_true`` (no positives), or equal to
    every row of ``y_true`` (no negatives), has no defined AUC and is skipped; the mean is
    over the remaining classes, nan when none remains. With two classes and
    ``proba[:, 0] = 1 - proba[:, 1]`` this equals the binary AUC.
    """
    true = _as_labels(y_true, "y_true")
    scores = np.asarray(proba, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != true.size:
        raise ValueError(f"proba must be N x C with N = {true.size} rows, got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        row = int(np.flatnonzero(~np.isfinite(scores).all(axis=1))[0])
        raise ValueError(f"proba has NaN/inf at row {row}")
    classes = np.arange(scores.shape[1]) if labels is None else np.asarray(labels, np.int64)
    if classes.size != scores.shape[1]:
        raise ValueError(f"labels has {classes.size} classes but proba has {scores.shape[1]} columns")
    unknown = np.setdiff1d(true, classes)
    if unknown.size:
        raise ValueError(f"y_true holds label(s) {unknown.tolist()} not in labels {classes.tolist()}")
    aucs = []
    for column, label in enumerate(classes):
        is_positive = true == label
        if 0 < is_positive.sum() < true.size:
            aucs.append(_binary_auc(is_positive, scores[:, column]))
    return float(np.mean(aucs)) if aucs else float("nan")


# --------------------------------------------------------------------------- registry


def _hard_labels(proba: np.ndarray, labels: Sequence[int] | None) -> np.ndarray:
    """Predicted class of each row: argmax of N x C probabilities (mapped to ``labels``);
    a 1-D ``proba`` is taken as hard labels already (probes that only predict classes)."""
    proba = np.asarray(proba)
    if proba.ndim == 1:
        return proba
    if proba.ndim != 2:
        raise ValueError(f"classification metrics need N x C class probabilities, got {proba.shape}")
    winners = np.argmax(proba, axis=1)
    return winners if labels is None else np.asarray(labels, np.int64)[winners]


_REGRESSION: dict[str, Callable[..., float]] = {
    "spearman": spearman,
    "pearson": pearson,
    "mse": mse,
    "ndcg": ndcg,
}


def score(name: str, y_true, pred, labels: Sequence[int] | None = None) -> float:
    """Metric ``name`` of predictions ``pred`` (N, regression) or probabilities (N x C).

    ``labels`` (classification only) names the class of each column of ``pred``; the
    default ``0 .. C-1`` matches the heads, whose ``classes_`` are the task's class indices.
    """
    if name in _REGRESSION:
        return _REGRESSION[name](y_true, pred)
    if name == "accuracy":
        return accuracy(y_true, _hard_labels(pred, labels))
    if name == "macro_f1":
        return macro_f1(y_true, _hard_labels(pred, labels), labels=labels)
    if name == "roc_auc":
        return roc_auc_ovr(y_true, pred, labels=labels)
    known = sorted(HIGHER_IS_BETTER)
    raise ValueError(f"unknown metric {name!r}; known metrics: {known}")
