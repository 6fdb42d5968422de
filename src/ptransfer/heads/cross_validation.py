"""The layer and every hyper-parameter chosen by k-fold cross-validation (``selection=cv``).

On a small validation set the layer and hyper-parameters that score best on it are noise:
GB1 two_vs_rest validates on 43 proteins, and with AntiBERTy the validation-chosen cell
(layer 6, alpha 0.03) scores 0.221 on test where every other layer scores 0.38-0.54.
``CrossValidatedSelection`` uses every labelled protein of train and validation together
(never a test set):

1. the proteins are dealt into ``n_folds`` folds at random (``seed``); the residues of one
   protein always share its fold (``groups``: the protein of each row);
2. for each layer and each grid value, the probe is fitted on ``n_folds - 1`` folds and
   scored on the held-out one; the value's *CV score* is the mean over folds (the probes
   score their whole grid in one fit: ``val_scores_``);
3. per layer, the grid value with the best CV score (the probe's own tie rule,
   ``select_best``); across layers, the layer with the best CV score (ties: the shallower);
4. ``refit`` fits a layer's final probe on train and validation together, its grid reduced
   to that layer's value (early stopping, where a probe has it, then watches the same rows:
   no rows are left out).

Any probe with the estimator contract of ``ptransfer.heads`` serves: ``fit(X, y, X_val,
y_val)`` giving ``val_scores_`` ({grid value: score}), and the class attributes
``grid_param``, ``prefer_larger`` and ``selection_metric``. The streaming probe is fitted
from streamed statistics, not stored features: it has no cross-validation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, clone

from ptransfer.heads.selection import select_best
from ptransfer.metrics import HIGHER_IS_BETTER

DEFAULT_FOLDS = 5


def fold_of(groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index (0 .. n_folds-1) of every row: groups dealt at random, round robin."""
    names, inverse = np.unique(groups, return_inverse=True)
    if names.size < n_folds:
        raise ValueError(f"cross-validation: {names.size} proteins cannot fill {n_folds} "
                         "folds (n_folds must be at most the number of proteins)")
    order = np.random.default_rng(seed).permutation(names.size)
    fold = np.empty(names.size, dtype=np.int64)
    fold[order] = np.arange(names.size) % n_folds
    return fold[inverse]


class CrossValidatedSelection(BaseEstimator):
    """Layer and hyper-parameters by k-fold CV over train and validation (module docstring).

    ``probe``: an unfitted probe of ``ptransfer.heads`` (its grid is searched). After
    ``fit``: ``grid_`` (G values), ``cv_scores_`` (L x G mean fold scores; NaN where every
    fold was undefined), ``fold_scores_`` (L x K x G), ``values_`` (L: each layer's chosen
    grid value), ``best_layer_``, ``folds_`` (N: each row's fold), ``metric_``.
    """

    def __init__(self, probe, n_folds: int = DEFAULT_FOLDS, seed: int = 0):
        self.probe = probe
        self.n_folds = n_folds
        self.seed = seed

    def _check(self, layers: Sequence[np.ndarray], y: np.ndarray, groups) -> np.ndarray:
        for attribute in ("grid_param", "prefer_larger", "selection_metric"):
            if not hasattr(self.probe, attribute):
                raise ValueError(f"cross-validation: {type(self.probe).__name__} has no "
                                 f"{attribute!r} (not a probe of ptransfer.heads)")
        if int(self.n_folds) != self.n_folds or self.n_folds < 2:
            raise ValueError(f"cross-validation: n_folds must be an integer >= 2, got "
                             f"{self.n_folds!r}")
        if not len(layers):
            raise ValueError("cross-validation: no layers to choose from")
        n = len(y)
        groups = np.arange(n) if groups is None else np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"cross-validation: groups has shape {groups.shape}, expected "
                             f"({n},)")
        return groups

    def fit(self, layers: Sequence[np.ndarray], y: np.ndarray,
            groups: np.ndarray | None = None) -> CrossValidatedSelection:
        """``layers``: L feature arrays (each N x D_l) of the same N rows of train and
        validation, read once each in order (a lazy sequence serves); ``y`` (N) targets;
        ``groups`` (N) the protein of each row (default: one row per protein)."""
        groups = self._check(layers, np.asarray(y), groups)
        y = np.asarray(y)
        self.folds_ = fold_of(groups, int(self.n_folds), self.seed)
        self.grid_ = np.asarray(self.probe.get_params()[self.probe.grid_param], dtype=float)
        self.metric_ = self.probe.selection_metric
        scores = np.full((len(layers), int(self.n_folds), self.grid_.size), np.nan)
        for layer, X in enumerate(layers):
            if np.ndim(X) != 2 or len(X) != len(y):
                raise ValueError(f"cross-validation: layer {layer} has shape {np.shape(X)}, "
                                 f"expected {len(y)} rows (one per target)")
            for fold in range(int(self.n_folds)):
                held = self.folds_ == fold
                probe = clone(self.probe).fit(X[~held], y[~held], X[held], y[held])
                scores[layer, fold] = [probe.val_scores_[float(v)] for v in self.grid_]
        self.fold_scores_ = scores
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # undefined in every fold: NaN
            self.cv_scores_ = np.nanmean(scores, axis=1)
        picks = [select_best(self.grid_, row, self.metric_, self.probe.prefer_larger)
                 for row in self.cv_scores_]
        self.values_ = self.grid_[picks]
        best = self.cv_scores_[np.arange(len(layers)), picks]
        sign = 1.0 if HIGHER_IS_BETTER[self.metric_] else -1.0
        ranked = np.where(np.isnan(best), -np.inf, sign * best)
        self.best_layer_ = int(np.argmax(ranked))  # argmax: the first (shallowest) of ties
        return self

    def layer_params(self, layer: int) -> dict:
        """The probe parameters of ``layer``'s final fit: its grid reduced to one value."""
        return {self.probe.grid_param: [float(self.values_[layer])]}

    def refit(self, layer: int, X: np.ndarray, y: np.ndarray):
        """``layer``'s final probe, fitted on ``X`` (N x D: train and validation) at the
        value chosen for it; the test sets are never seen."""
        probe = clone(self.probe).set_params(**self.layer_params(layer))
        return probe.fit(X, y, X, y)

    def out_of_fold(self, layer: int, X: np.ndarray, y: np.ndarray,
                    rows: np.ndarray) -> np.ndarray:
        """Predictions for ``rows`` (indices into ``X``, N x D of ``fit``'s rows) from the
        probes that did not see them: per fold, fitted on the other folds at ``layer``'s
        value (``predict``, or ``predict_proba`` for a classifier: len(rows) [x C])."""
        out = None
        for fold in np.unique(self.folds_[rows]):
            held = self.folds_ == fold
            probe = clone(self.probe).set_params(**self.layer_params(layer))
            probe.fit(X[~held], y[~held], X[held], y[held])
            mine = rows[held[rows]]
            pred = (probe.predict_proba(X[mine]) if hasattr(probe, "predict_proba")
                    else probe.predict(X[mine]))
            if out is None:
                out = np.zeros((len(rows), *np.shape(pred)[1:]))
            out[held[rows]] = pred
        return out
