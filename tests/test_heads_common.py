"""Shared pieces of the heads: validation selection rule, chunked standardisation, input checks."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from ptransfer.heads import select_best, standardize
from ptransfer.heads.inputs import check_labels, resolve_n_classes
from ptransfer.heads.standardize import FeatureMoments, fit_standardizer

GRID = [0.1, 1.0, 10.0, 100.0]


# ----------------------------------------------------------------------------- selection


def test_select_best_picks_the_highest_score():
    assert select_best(GRID, [0.2, 0.5, 0.4, 0.1], "spearman", prefer_larger=True) == 1


def test_select_best_respects_lower_is_better():
    assert select_best(GRID, [3.0, 1.0, 2.0, 5.0], "mse", prefer_larger=True) == 1


@pytest.mark.parametrize("prefer_larger, expected", [(True, 3), (False, 1)])
def test_ties_go_to_the_preferred_end(prefer_larger, expected):
    scores = [0.1, 0.7, 0.7, 0.7 * (1 + 1e-14)]  # last-bit differences count as ties
    assert select_best(GRID, scores, "accuracy", prefer_larger=prefer_larger) == expected


def test_unsorted_grid_is_handled():
    assert select_best([10.0, 0.1, 100.0], [0.5, 0.5, 0.2], "accuracy", prefer_larger=True) == 0


def test_nan_never_wins():
    assert select_best(GRID, [0.3, math.nan, 0.1, math.nan], "pearson", prefer_larger=True) == 0


def test_all_nan_chooses_most_regularised_and_warns(caplog):
    with caplog.at_level(logging.WARNING):
        assert select_best(GRID, [math.nan] * 4, "spearman", prefer_larger=True) == 3
    assert "every validation spearman is nan" in caplog.text


# ----------------------------------------------------------------------------- standardisation


def test_chunked_float16_statistics_equal_standard_scaler(monkeypatch):
    monkeypatch.setattr(standardize, "CHUNK_ELEMENTS", 40)  # 5 rows per chunk: many chunks
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(103, 8)) * rng.uniform(0.1, 5, 8) + 3).astype(np.float16)
    result = fit_standardizer(X)
    reference = StandardScaler().fit(X.astype(np.float64))
    np.testing.assert_allclose(result.mean, reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(result.scale, reference.scale_, rtol=1e-10)


def test_large_offset_keeps_its_variance():
    rng = np.random.default_rng(1)
    X = 1e8 + rng.normal(size=(500, 3))  # E[x^2] - E[x]^2 about zero would lose everything
    result = fit_standardizer(X)
    np.testing.assert_allclose(result.scale, X.std(axis=0), rtol=1e-6)


def test_constant_column_centres_to_exact_zero():
    X = np.column_stack([np.full(7, 0.1), np.arange(7.0)])
    result = fit_standardizer(X)
    assert result.constant.tolist() == [True, False] and result.scale[0] == 1.0
    assert np.all(result.transform(X)[:, 0] == 0.0)
    np.testing.assert_array_equal(result.active, [1])


def test_row_subset_statistics_and_error_rows(monkeypatch):
    monkeypatch.setattr(standardize, "CHUNK_ELEMENTS", 4)
    X = np.arange(20.0).reshape(10, 2)
    rows = np.array([1, 2, 3, 7, 9])
    np.testing.assert_allclose(fit_standardizer(X, rows=rows).mean, X[rows].mean(axis=0))
    X[7, 0] = np.nan
    with pytest.raises(ValueError, match="X has NaN/inf at row 7"):
        fit_standardizer(X, rows=rows)


def test_moments_reject_a_changed_feature_count():
    moments = FeatureMoments("X_chunks").update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="X_chunks: chunk has 2 features, earlier rows had 3"):
        moments.update(np.zeros((2, 2)))


def test_moments_without_rows_is_an_error():
    with pytest.raises(ValueError, match="no rows seen"):
        FeatureMoments("X").standardizer()


# ----------------------------------------------------------------------------- labels


def test_resolve_n_classes_from_labels():
    assert resolve_n_classes(np.array([0, 2]), np.array([1, 4]), given=None, owner="t") == 5
    assert resolve_n_classes(np.array([0, 0]), given=None, owner="t") == 2


def test_labels_of_wrong_length_are_an_error():
    with pytest.raises(ValueError, match="y must be 1-D with 3 rows"):
        check_labels(np.zeros(2, int), 3, "y")


# ----------------------------------------------------------------------------- threads


def _toy_task(kind: str, rng: np.random.Generator, n_train=300, n_val=80, n_test=80):
    from ptransfer.tasks.base import Split, Task

    def split(n):
        seqs = ["".join(rng.choice(list("ACDEFGHIKL"), 8)) for _ in range(n)]
        y = rng.normal(size=n) if kind == "regression" else rng.integers(0, 3, n)
        return Split(seqs, y)

    return Task("toy", "protein", kind, {"train": split(n_train), "val": split(n_val),
                                         "test": split(n_test)}, dataset="toy",
                metric="spearman" if kind == "regression" else "accuracy",
                classes=None if kind == "regression" else ["a", "b", "c"])


@pytest.mark.parametrize("probe_name,kind,width", [("RidgeProbe", "regression", 700),
                                                   ("RidgeProbe", "regression", 120),
                                                   ("LogisticProbe", "classification", 120)])
def test_a_layer_fit_does_not_depend_on_the_callers_thread_count(probe_name, kind, width):
    # Issue 28 item 8: OpenBLAS's sums depend on its thread count; fit_layer pins one thread.
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    import ptransfer.heads as heads
    from ptransfer.heads.fit_layers import fit_layer

    rng = np.random.default_rng(0)
    task = _toy_task(kind, rng)
    features = {s: rng.normal(size=(len(task.splits[s]), width)).astype(np.float32)
                for s in task.splits}
    fits = []
    for threads in (1, 2):
        with threadpool_limits(threads):
            before = [i["num_threads"] for i in threadpool_info()], torch.get_num_threads()
            probe = getattr(heads, probe_name)(**({"n_classes": 3} if kind != "regression"
                                                  else {}))
            fits.append(fit_layer(probe, 0, task, features.__getitem__))
            assert ([i["num_threads"] for i in threadpool_info()],
                    torch.get_num_threads()) == before  # the caller's counts are restored
    one, two = fits
    assert one.hparams == two.hparams and one.scores == two.scores
    for eval_set, p in one.predictions.items():
        q = two.predictions[eval_set]
        assert p.y_pred.tobytes() == q.y_pred.tobytes()
        assert (p.proba is None and q.proba is None) or p.proba.tobytes() == q.proba.tobytes()
