"""Cross-validated selection of the layer and hyper-parameters (``selection=cv``): folds,
CV scores against scikit-learn, bad input, and the known-truth case of issue 24 (40
validation proteins and one planted spurious layer)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from ptransfer.analysis.intervals import (
    Elements,
    percentile_interval,
    replicates,
    resample_counts,
)
from ptransfer.analysis.selection import decision_rows, selection_warnings
from ptransfer.heads import LogisticProbe, RidgeProbe
from ptransfer.heads.cross_validation import CrossValidatedSelection, fold_of
from ptransfer.heads.fit_cv import fit_cv_layers
from ptransfer.heads.selection import select_best
from ptransfer.metrics import spearman
from ptransfer.tasks.base import Split, Task

ALPHAS = (0.1, 1.0, 10.0, 100.0)
QUALITY = [0.4, 0.8, 1.1, 1.5, 1.0]  # layer 3 is truly best; layer 5 is the spurious one
SPURIOUS = len(QUALITY)


def _layers(rng, s: np.ndarray, validation: np.ndarray, d: int = 10) -> list[np.ndarray]:
    """Per layer N x d features: column 0 carries the signal ``s`` at the layer's quality;
    the spurious layer carries it weakly (0.5) except on the validation rows (3.0): it
    looks best on validation, and is poor on every other protein."""
    out = []
    for q in [*QUALITY, None]:
        X = rng.normal(size=(len(s), d))
        weight = np.where(validation, 3.0, 0.5) if q is None else q
        X[:, 0] += weight * s
        out.append(X)
    return out


def _world(seed: int, n_train=200, n_val=40, n_test=1000):
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    s = rng.normal(size=n)
    y = s + 0.5 * rng.normal(size=n)
    split = np.repeat(["train", "val", "test"], [n_train, n_val, n_test])
    return _layers(rng, s, split == "val"), y, split


def _validation_choice(layers, y, split):
    """The per-cell rule today: each layer's alpha on validation, the best layer on it."""
    tr, va = split == "train", split == "val"
    fits = [RidgeProbe(alphas=ALPHAS).fit(X[tr], y[tr], X[va], y[va]) for X in layers]
    scores = [spearman(y[va], p.predict(X[va])) for p, X in zip(fits, layers)]
    return int(np.argmax(scores)), fits


def test_cv_finds_the_truly_best_layer_where_40_validation_proteins_are_fooled():
    """>= 9 of 10 replications: the CV choice's test score (refit on train + validation)
    lies inside the 95 % interval of the truly best layer's test score; the validation
    choice picks the planted layer (its test score far below), and the analysis flags a
    40-protein validation set."""
    inside = fooled = 0
    for seed in range(10):
        layers, y, split = _world(seed)
        seen, test = split != "test", split == "test"
        cv = CrossValidatedSelection(RidgeProbe(alphas=ALPHAS), n_folds=5, seed=seed).fit(
            [X[seen] for X in layers], y[seen])
        probe = cv.refit(cv.best_layer_, layers[cv.best_layer_][seen], y[seen])
        cv_score = spearman(y[test], probe.predict(layers[cv.best_layer_][test]))
        chosen, fits = _validation_choice(layers, y, split)
        best = fits[3].predict(layers[3][test])  # the truly best layer, as the cell fits it
        n = int(test.sum())
        counts = resample_counts(n, 1000, np.random.default_rng(seed))
        truth = replicates("spearman", counts, Elements(y[test], np.arange(n), n), [best])[0]
        low, high = percentile_interval(truth, n_items=n)
        inside += low <= cv_score <= high
        fooled += chosen == SPURIOUS
    assert inside >= 9
    assert fooled >= 9  # what the validation-only selection does on 40 proteins
    assert "validates on 40 proteins (< 100)" in selection_warnings({"sim": 40})["sim"]


def test_folds_keep_the_residues_of_a_protein_together_and_are_balanced():
    groups = np.repeat(np.arange(23), np.random.default_rng(0).integers(1, 9, size=23))
    folds = fold_of(groups, 5, seed=3)
    for g in np.unique(groups):
        assert np.unique(folds[groups == g]).size == 1
    per_fold = np.bincount(folds[np.unique(groups, return_index=True)[1]], minlength=5)
    assert per_fold.max() - per_fold.min() <= 1
    assert np.array_equal(folds, fold_of(groups, 5, seed=3))  # seeded
    with pytest.raises(ValueError, match="3 proteins cannot fill 5 folds"):
        fold_of(np.array([0, 1, 2]), 5, seed=0)


def test_cv_scores_match_scikit_learn_fold_by_fold():
    """The mean over folds of sklearn's Ridge on StandardScaler features, scored by
    Spearman on the held-out fold, per layer and alpha; the choice by hand."""
    rng = np.random.default_rng(1)
    y = rng.normal(size=120)
    layers = [rng.normal(size=(120, 6)) + q * y[:, None] * [1, 0, 0, 0, 0, 0]
              for q in (0.2, 1.0)]
    cv = CrossValidatedSelection(RidgeProbe(alphas=ALPHAS), n_folds=4, seed=7).fit(layers, y)
    for layer, X in enumerate(layers):
        for g, alpha in enumerate(ALPHAS):
            per_fold = []
            for fold in range(4):
                held = cv.folds_ == fold
                scaler = StandardScaler().fit(X[~held])
                model = Ridge(alpha=alpha).fit(scaler.transform(X[~held]), y[~held])
                per_fold.append(stats.spearmanr(y[held],
                                                model.predict(scaler.transform(X[held]))
                                                ).statistic)
            assert cv.cv_scores_[layer, g] == pytest.approx(np.mean(per_fold), abs=1e-9)
        pick = select_best(ALPHAS, cv.cv_scores_[layer], "spearman", prefer_larger=True)
        assert cv.values_[layer] == ALPHAS[pick]
    assert cv.best_layer_ == 1
    refit = cv.refit(1, layers[1], y)
    assert refit.alpha_ == cv.values_[1] and cv.layer_params(1) == {"alphas": [refit.alpha_]}


def test_any_probe_of_the_heads_serves_logistic_with_its_own_tie_rule():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=150)
    X = rng.normal(size=(150, 4)) + 1.5 * y[:, None] * [1, 0, 0, 0]
    cv = CrossValidatedSelection(LogisticProbe(Cs=(0.01, 1.0), metric="accuracy"),
                                 n_folds=3).fit([X], y)
    assert cv.metric_ == "accuracy" and cv.cv_scores_.shape == (1, 2)
    assert cv.refit(0, X, y).C_ == cv.values_[0]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_folds": 1}, "n_folds must be an integer >= 2"),
    ({"layers": [np.zeros((5, 2))]}, "layer 0 has shape \\(5, 2\\), expected 12 rows"),
    ({"groups": np.zeros(3)}, "groups has shape"),
    ({"probe": object()}, "object has no 'grid_param'"),
])
def test_bad_input_is_named(kwargs, message):
    y = np.arange(12.0)
    layers = kwargs.pop("layers", [np.random.default_rng(0).normal(size=(12, 2))])
    groups = kwargs.pop("groups", None)
    estimator = CrossValidatedSelection(kwargs.pop("probe", RidgeProbe()), **kwargs)
    with pytest.raises(ValueError, match=message):
        estimator.fit(layers, y, groups)


def test_the_config_keys_agree_with_the_library():
    """conf/config.yaml's ``selection`` block: its defaults are the library's constants."""
    from omegaconf import OmegaConf

    from ptransfer.analysis.selection import MIN_VALIDATION_ITEMS
    from ptransfer.cli import CONF_DIR
    from ptransfer.heads.cross_validation import DEFAULT_FOLDS

    selection = OmegaConf.load(CONF_DIR / "config.yaml").selection
    assert selection.method in ("val", "cv", "auto")
    assert selection.folds == DEFAULT_FOLDS
    assert selection.min_val_items == MIN_VALIDATION_ITEMS


def test_out_of_fold_predictions_come_from_the_probe_that_did_not_see_the_row():
    rng = np.random.default_rng(4)
    y = rng.normal(size=90)
    X = rng.normal(size=(90, 5)) + y[:, None] * [1, 0.5, 0, 0, 0]
    cv = CrossValidatedSelection(RidgeProbe(alphas=ALPHAS), n_folds=3, seed=1).fit([X], y)
    rows = np.arange(60, 90)  # "validation" rows
    oof = cv.out_of_fold(0, X, y, rows)
    for i, row in enumerate(rows):
        held = cv.folds_ == cv.folds_[row]
        probe = RidgeProbe(alphas=[cv.values_[0]]).fit(X[~held], y[~held], X[held], y[held])
        assert oof[i] == pytest.approx(probe.predict(X[[row]])[0])
    in_sample = cv.refit(0, X, y).predict(X[rows])
    assert not np.allclose(oof, in_sample)


def test_a_cells_cv_fits_score_validation_out_of_fold_and_keep_the_cv_choice():
    """``fit_cv_layers`` (what a ``selection=cv`` cell runs): each layer refit on train and
    validation, its validation entry from out-of-fold predictions, and the best layer the
    CV choice even where the out-of-fold validation score prefers the planted layer."""
    layers, y, split = _world(0)
    names = ("train", "val", "test")
    task = Task("sim", "protein", "regression",
                {s: Split([f"S{s}{i}" for i in range((split == s).sum())], y[split == s])
                 for s in names}, dataset="sim", metric="spearman")
    fits, best = fit_cv_layers(RidgeProbe(alphas=ALPHAS), task,
                               lambda layer, s: layers[layer][split == s], len(layers), 5, 0)
    seen = split != "test"
    cv = CrossValidatedSelection(RidgeProbe(alphas=ALPHAS), n_folds=5, seed=0).fit(
        [X[seen] for X in layers], y[seen])
    assert best == cv.best_layer_ == 3
    val_scores = [f.scores["val"]["spearman"] for f in fits]
    assert int(np.argmax(val_scores)) == SPURIOUS  # what a val-argmax rule would take
    val_rows = np.flatnonzero(split[seen] == "val")
    for layer, fit in enumerate(fits):
        oof = cv.out_of_fold(layer, layers[layer][seen], y[seen], val_rows)
        assert np.allclose(fit.predictions["val"].y_pred, oof)
        assert fit.n_train == seen.sum() and fit.hparams == {"alpha": cv.values_[layer]}


def test_decision_rows_keep_the_cross_validated_rows_of_a_task_that_has_them():
    rows = pd.DataFrame({
        "task": ["small", "small", "small", "large"],
        "selection": ["val", "cv", "cv", "val"],
        "value": [1.0, 2.0, 3.0, 4.0]})
    kept = decision_rows(rows)
    # the small-validation task keeps its cv rows only; a task without cv keeps its val rows
    assert kept["value"].tolist() == [2.0, 3.0, 4.0]
    assert decision_rows(rows.iloc[:0]).empty
