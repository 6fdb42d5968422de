"""Bootstrap replicates of a metric over test proteins, vectorised (no loop per resample).

A resample is a row of *counts*: ``W[b, c]`` is how many times protein (cluster) ``c`` was
drawn in resample ``b`` (B x C, drawn with replacement, C draws per row). Per-residue tasks
resample proteins, not residues (a cluster bootstrap): every residue of a protein carries its
protein's count. A metric under resample ``b`` is the metric of the data with each element
repeated ``W[b, cluster]`` times, computed for all B rows at once:

- ``accuracy``, ``mse``, ``pearson``, ``macro_f1``: per-cluster sums (correct/count, squared
  error, moments, per-class TP / true / predicted counts) times ``W`` (one matrix product);
- ``spearman``: ranks of a weighted sample from one sort of the original values: the average
  rank of value x under weights w is ``sum(w[v < x]) + (sum(w[v == x]) + 1) / 2``, a cumulative
  sum along the sorted order (B x N), then a weighted Pearson of the ranks.

``ndcg`` and ``roc_auc`` have no vectorised replicate here: their intervals are NaN with a note.
``percentile_interval`` is the (expanded) percentile interval of a single-seed arm; seed-aware
variances, t intervals, p-values and Holm are in ``inference``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import stats

N_RESAMPLES = 1000
THREADS = max(1, min(4, os.cpu_count() or 1))
LEVEL = 0.95
CHUNK_ELEMENTS = 250_000  # resamples x elements per chunk: ~1 MB float32 blocks stay in cache
_CUBE_MINUS = np.arange(256, dtype=np.float64) ** 3 - np.arange(256)  # k^3 - k per count k
BOOTSTRAP_METRICS = frozenset({"spearman", "pearson", "mse", "accuracy", "macro_f1"})


def resample_counts(n_clusters: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """B x C counts (uint8) of each cluster in B resamples of C draws with replacement.

    Counted a few rows at a time: a bincount over a block that fits in cache is ~10x faster
    than one over all B x C draws. A count above 255 has probability ~1e-500: uint8 suffices.
    """
    counts = np.empty((n_resamples, n_clusters), dtype=np.uint8)
    block = max(1, min(n_resamples, 1_000_000 // max(n_clusters, 1)))
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        draws = rng.integers(0, n_clusters, size=(rows, n_clusters))
        draws += np.arange(rows)[:, None] * n_clusters
        counts[start:start + rows] = np.bincount(
            draws.ravel(), minlength=rows * n_clusters).reshape(rows, n_clusters)
    return counts


def chunk_rows(n_elements: int, n_resamples: int) -> int:
    """Resamples per chunk so that a B-chunk x N array stays near CHUNK_ELEMENTS."""
    return int(max(1, min(n_resamples, CHUNK_ELEMENTS // max(n_elements, 1))))


class Elements:
    """The scored elements of one eval set: targets, and the cluster (protein) of each.

    ``y_true`` (N) regression targets or class indices, ``cluster`` (N) int index in
    ``0..C-1`` of the element's protein. Caches the sort of ``y_true`` for Spearman.
    """

    def __init__(self, y_true: np.ndarray, cluster: np.ndarray, n_clusters: int):
        self.y_true = np.asarray(y_true)
        self.cluster = np.asarray(cluster, dtype=np.int64)
        self.n_clusters = int(n_clusters)
        self.per_cluster_count = np.bincount(self.cluster, minlength=n_clusters).astype(float)
        self.identity = bool(len(self.cluster) == n_clusters
                             and np.array_equal(self.cluster, np.arange(n_clusters)))
        self._true_sort = None

    @property
    def true_sort(self):
        if self._true_sort is None:
            self._true_sort = _sort_with_ties(self.y_true.astype(float))
        return self._true_sort


def _sort_with_ties(values: np.ndarray):
    """Order of ``values`` and, per sorted position, its tie group's first and last index."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    new_group = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    if new_group.all():
        return order, None, None
    group_id = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], len(values)] - 1
    return order, starts[group_id], ends[group_id]


def _doubled_ranks(w_sorted: np.ndarray, starts, ends) -> np.ndarray:
    """Twice the average ranks (b x N int32, in sorted order) of a sample whose sorted
    elements have integer weights ``w_sorted``; ties (``starts``/``ends``: each position's
    group) share a rank. Doubling keeps the half ranks of ties exact integers, and integer
    cumulative sums are ~5x faster than float ones."""
    cum = np.cumsum(w_sorted, axis=1, dtype=np.int32)
    if starts is None:
        return 2 * cum - w_sorted + 1  # 2 below + w + 1 with below = cum - w
    below = np.where(starts > 0, np.take(cum, np.maximum(starts - 1, 0), axis=1), 0)
    return below + np.take(cum, ends, axis=1) + 1  # 2 below + total + 1


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products, accumulated in float64 (float32 sums over 1e5 terms drift)."""
    return np.einsum("ij,ij->i", a, b, dtype=np.float64)


class Prediction(np.ndarray):
    """A prediction vector that caches its sort (one per prediction, shared by all chunks)."""

    @property
    def sort(self):
        if getattr(self, "_sort", None) is None:
            self._sort = _sort_with_ties(np.asarray(self, dtype=float))
        return self._sort


def _spearman(W, elements: Elements, y_pred: Prediction, cache: dict) -> np.ndarray:
    """Spearman of every resample (b rows) as the weighted Pearson of the resample's ranks.

    In doubled, centred ranks ``d = 2 rank - (N + 1)`` (exact integers), the correlation is
    ``sum(w dx dy) / sqrt(sum(w dx^2) sum(w dy^2))``. Without ties among distinct
    predictions, ``sum(w dx) = 0`` turns the numerator into ``w dx . (2 cum - w)`` (``cum``:
    cumulative weight in prediction order) and ``sum(w dy^2)`` into the closed form
    ``(N^3 - N - sum(w^3 - w)) / 3`` (copies of one element are tied): one integer cumulative
    sum, two gathers and one dot product per prediction.
    """
    w = W if elements.identity else np.take(W, elements.cluster, axis=1)  # b x N counts
    if "w_dx" not in cache:  # the true values' ranks are shared by every prediction
        total = w.sum(axis=1, dtype=np.int64)
        t_order, t_starts, t_ends = elements.true_sort
        inverse = np.empty_like(t_order)
        inverse[t_order] = np.arange(len(t_order))
        ranks = _doubled_ranks(np.take(w, t_order, axis=1), t_starts, t_ends)
        dx = np.take(ranks, inverse, axis=1) - (total + 1)[:, None].astype(np.int32)
        cache["w_dx"] = (w * dx).astype(np.float32)  # |w dx| < 2**24: exact in float32
        cache["var_x"] = _row_dot(cache["w_dx"], dx.astype(np.float32))
        ties = np.take(_CUBE_MINUS, w).sum(axis=1)
        cache["tie_free_var"] = (total.astype(float) ** 3 - total - ties) / 3.0
        cache["total"] = total
    p_order, p_starts, p_ends = y_pred.sort
    w_p = np.take(w, p_order, axis=1)
    w_dx = np.take(cache["w_dx"], p_order, axis=1)
    if p_starts is None:
        cum = np.cumsum(w_p, axis=1, dtype=np.int32)
        cov = _row_dot(w_dx, (2 * cum - w_p).astype(np.float32))
        var_y = cache["tie_free_var"]
    else:
        dy = _doubled_ranks(w_p, p_starts, p_ends) - (cache["total"] + 1)[:, None].astype(
            np.int32)
        dy = dy.astype(np.float32)
        cov = _row_dot(w_dx, dy)
        var_y = _row_dot(w_p.astype(np.float32) * dy, dy)
    var = cache["var_x"] * var_y
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var)
    return np.where(var > 0, np.clip(r, -1.0, 1.0), np.nan)


def _counts64(W, cache: dict) -> np.ndarray:
    """The chunk's counts as float64 (BLAS matrix products need one float type)."""
    if "w64" not in cache:
        cache["w64"] = W.astype(np.float64)
    return cache["w64"]


def _cluster_sums(elements: Elements, columns: np.ndarray) -> np.ndarray:
    """C x K per-cluster sums of the N x K ``columns``."""
    out = np.zeros((elements.n_clusters, columns.shape[1]))
    np.add.at(out, elements.cluster, columns)
    return out


def _pearson(W, elements: Elements, y_pred, cache: dict) -> np.ndarray:
    # Centre by the full-sample means first: the moment sums then do not cancel badly.
    x = elements.y_true.astype(float) - elements.y_true.mean()
    y = np.asarray(y_pred, dtype=float) - np.mean(y_pred)
    sums = _counts64(W, cache) @ _cluster_sums(elements, np.c_[np.ones_like(x), x, y, x * x, y * y, x * y])
    n, sx, sy, sxx, syy, sxy = sums.T
    cov = sxy - sx * sy / n
    var = (sxx - sx * sx / n) * (syy - sy * sy / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var)
    return np.where(var > 1e-12 * np.maximum(sxx * syy, 1e-300), np.clip(r, -1, 1), np.nan)


def _mse(W, elements: Elements, y_pred, cache: dict) -> np.ndarray:
    err = (elements.y_true.astype(float) - np.asarray(y_pred, dtype=float)) ** 2
    sums = _counts64(W, cache) @ _cluster_sums(elements, np.c_[err, np.ones_like(err)])
    return sums[:, 0] / sums[:, 1]


def _accuracy(W, elements: Elements, y_pred, cache: dict) -> np.ndarray:
    correct = (elements.y_true.astype(np.int64) == np.asarray(y_pred, dtype=np.int64))
    per_cluster = np.bincount(elements.cluster, weights=correct, minlength=elements.n_clusters)
    counts = _counts64(W, cache)
    return (counts @ per_cluster) / (counts @ elements.per_cluster_count)


def _macro_f1(W, elements: Elements, y_pred, cache: dict) -> np.ndarray:
    true = elements.y_true.astype(np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    classes = np.union1d(true, pred)
    cols = [np.c_[(true == k) & (pred == k), true == k, pred == k] for k in classes]
    sums = _counts64(W, cache) @ _cluster_sums(elements, np.hstack(cols).astype(float))  # b x 3K
    tp, n_true, n_pred = sums[:, 0::3], sums[:, 1::3], sums[:, 2::3]
    denominator = n_true + n_pred  # = 2 TP + FP + FN; 0 when the class is absent: skipped
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2.0 * tp / denominator, np.nan)
    return np.nanmean(f1, axis=1)


REPLICATE = {"spearman": _spearman, "pearson": _pearson, "mse": _mse,
             "accuracy": _accuracy, "macro_f1": _macro_f1}


def replicates(metric: str, counts: np.ndarray, elements: Elements,
               predictions: list[np.ndarray]) -> np.ndarray:
    """The metric of each prediction under each resample: K x B.

    ``counts`` is B x C (``resample_counts``); each of the K ``predictions`` (N) is aligned
    with ``elements``. Processed in B-chunks (a memory bound, not a loop per resample); work
    that depends only on the targets (their ranks) is done once per chunk for all K.
    """
    if metric not in REPLICATE:
        raise ValueError(f"no vectorised bootstrap for metric {metric!r} "
                         f"(available: {sorted(REPLICATE)})")
    fn = REPLICATE[metric]
    step = chunk_rows(len(elements.y_true), counts.shape[0])
    out = np.empty((len(predictions), counts.shape[0]))
    predictions = [np.asarray(y).view(Prediction) for y in predictions]
    if metric == "spearman":  # sort once, before the threads share them
        _ = elements.true_sort, [y.sort for y in predictions]

    def run(start: int) -> None:
        chunk, cache = counts[start:start + step], {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for k, y_pred in enumerate(predictions):
                out[k, start:start + len(chunk)] = fn(chunk, elements, y_pred, cache)

    # numpy releases the GIL in take / cumsum / einsum: chunks run in parallel threads,
    # each writing its own columns of ``out``.
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(run, range(0, counts.shape[0], step)))
    return out


def full_sample(metric: str, elements: Elements, y_pred: np.ndarray) -> float:
    """The metric on the data as they are (every cluster counted once)."""
    ones = np.ones((1, elements.n_clusters), dtype=np.uint8)
    return float(replicates(metric, ones, elements, [y_pred])[0, 0])


# ---------------------------------------------------------------- intervals


def percentile_interval(values: np.ndarray, level: float = LEVEL,
                        n_items: int | None = None) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored; NaN if > 5 %).

    With ``n_items`` (the number of resampled proteins), the *expanded* percentile interval
    (Hesterberg 2015): tails at ``Phi(-sqrt(n / (n - 1)) t_{n-1})`` instead of ``Phi(-z)``,
    which corrects the percentile interval's narrowness on small test sets (CASP12: 21
    proteins) and changes nothing visible on large ones.
    """
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size < 0.95 * values.size or finite.size < 2:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    if n_items is not None and n_items > 2:
        t = stats.t.ppf(1.0 - tail, n_items - 1) * np.sqrt(n_items / (n_items - 1.0))
        tail = float(stats.norm.sf(t))
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)
