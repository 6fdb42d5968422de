"""Ridge regression probe: every alpha of the grid from one eigendecomposition.

With standardised training features ``Z`` (N x D, constant features dropped) and centred
targets ``t = y - mean(y)``, the ridge solution for penalty alpha is
``w(alpha) = (Z^T Z + alpha I)^-1 Z^T t`` and the intercept is ``mean(y)`` (unpenalised).
One symmetric eigendecomposition gives all of them, on whichever side is smaller:

- primal (N >= D): ``Z^T Z = V diag(lam) V^T`` (D x D); ``w(alpha) = V (b / (lam + alpha))``
  with ``b = V^T Z^T t``;
- dual (N < D): ``Z Z^T = U diag(lam) U^T`` (N x N); ``w(alpha) = Z^T U (b / (lam + alpha))``
  with ``b = U^T t``.

Both are ``w(alpha) = B (b / (lam + alpha))`` for a basis ``B`` (D x r), so validation
predictions for the whole grid are one product ``(Z_val B) (b / (lam + alpha))``.
This equals ``sklearn.linear_model.Ridge(alpha, fit_intercept=True)`` on the same
standardised features.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from ptransfer.heads.backend import ArrayBackend
from ptransfer.heads.inputs import check_features, check_targets
from ptransfer.heads.selection import check_grid, check_metric, select_best
from ptransfer.heads.standardize import Standardizer, chunk_rows, fit_standardizer
from ptransfer.metrics import METRICS, score

log = logging.getLogger(__name__)

# Two values per decade, 1e-3 .. 1e4 (15 values): wide enough for 1 to 1280 standardised
# features and hundreds to thousands of proteins.
# 4 per decade: selection is finer than the usual 1 per decade, and costs nothing extra
# here since every alpha is solved from the same decomposition (docs/benchmarks.md).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 4, 29))


class RidgeSpectrum:
    """Ridge solutions for every alpha from one eigendecomposition (see module doc).

    ``basis`` is D x r, ``eigenvalues`` and ``projections`` are r; arrays live on the
    backend (numpy, or torch float64 on CUDA).
    """

    def __init__(self, Z, centred_targets, backend: ArrayBackend):
        n_rows, n_features = Z.shape
        self.backend = backend
        if n_rows >= n_features:
            eigenvalues, vectors = backend.eigh(backend.gram(Z))  # D x D
            self.basis = vectors
            self.projections = vectors.T @ (Z.T @ centred_targets)
        else:
            eigenvalues, vectors = backend.eigh(backend.gram(Z.T))  # N x N kernel
            self.basis = Z.T @ vectors
            self.projections = vectors.T @ centred_targets
        # Rounding can leave tiny negative eigenvalues of a PSD matrix; alpha > 0 keeps the
        # shrinkage factors finite once they are clamped to zero.
        self.eigenvalues = eigenvalues.clip(min=0.0)

    def shrunk(self, alphas):
        """``b / (lam + alpha)`` for each alpha: r x n_alphas."""
        alphas = self.backend.asarray(np.asarray(alphas, dtype=np.float64))
        return self.projections[:, None] / (self.eigenvalues[:, None] + alphas[None, :])

    def predict_path(self, Z_eval, alphas) -> np.ndarray:
        """Centred predictions of ``Z_eval`` (M x D) for every alpha: M x n_alphas (numpy)."""
        return self.backend.to_numpy((Z_eval @ self.basis) @ self.shrunk(alphas))

    def coef(self, alpha: float) -> np.ndarray:
        """Coefficients on the standardised features for one alpha: D (numpy)."""
        return self.backend.to_numpy(self.basis @ self.shrunk([alpha])[:, 0])


class RidgeProbe(BaseEstimator):
    """Ridge regression on standardised features, alpha chosen on validation by ``metric``.

    Parameters are only stored here (scikit-learn contract). After ``fit``:
    ``alpha_`` (chosen), ``coef_`` (D, on standardised features; 0 for features constant
    in training), ``intercept_`` (mean of y), ``mean_`` / ``scale_`` (D, training
    statistics), ``val_scores_`` ({alpha: validation score}).
    """

    # How ``heads.cross_validation`` reaches the grid: the parameter that holds it, and the
    # tie rule of ``select_best`` (True: the larger value, the more regularised model).
    grid_param = "alphas"
    prefer_larger = True

    @property
    def selection_metric(self) -> str:
        """The validation score the grid is chosen by (``metric``)."""
        return self.metric

    def __init__(self, alphas=DEFAULT_ALPHAS, metric: str = "spearman", device: str = "cpu"):
        self.alphas = alphas
        self.metric = metric
        self.device = device

    def fit(self, X, y, X_val, y_val) -> RidgeProbe:
        """Fit on ``X`` (N x D), ``y`` (N); choose alpha on ``X_val`` (M x D), ``y_val`` (M)."""
        alphas = check_grid(self.alphas, "alphas", "RidgeProbe")
        check_metric(self.metric, METRICS["regression"], "RidgeProbe")
        backend = ArrayBackend(self.device, owner="RidgeProbe")
        X = check_features(X, "X")
        X_val = check_features(X_val, "X_val", n_features=X.shape[1])
        y = check_targets(y, X.shape[0], "y")
        y_val = check_targets(y_val, X_val.shape[0], "y_val")

        standardizer = fit_standardizer(X, name="X")
        active = standardizer.active
        self.mean_, self.scale_ = standardizer.mean, standardizer.scale
        self.intercept_ = float(y.mean())
        self.n_features_in_ = X.shape[1]
        self.coef_ = np.zeros(X.shape[1])
        if active.size == 0:
            log.warning("RidgeProbe: every feature of X is constant; predicting the mean of y")
            val_predictions = np.full((X_val.shape[0], alphas.size), self.intercept_)
        else:
            Z = backend.asarray(_standardize_active(X, standardizer, active))
            Z_val = backend.asarray(_standardize_active(X_val, standardizer, active))
            spectrum = RidgeSpectrum(Z, backend.asarray(y - self.intercept_), backend)
            val_predictions = spectrum.predict_path(Z_val, alphas) + self.intercept_
        self.val_scores_ = {
            float(alpha): score(self.metric, y_val, val_predictions[:, i])
            for i, alpha in enumerate(alphas)
        }
        best = select_best(alphas, list(self.val_scores_.values()), self.metric, prefer_larger=True)
        self.alpha_ = float(alphas[best])
        if active.size:
            self.coef_[active] = spectrum.coef(self.alpha_)
        return self

    def predict(self, X) -> np.ndarray:
        """Predictions for ``X`` (N x D): N, standardised in row chunks (no float64 copy of a
        whole test split)."""
        self._check_fitted()
        X = check_features(X, "X", n_features=self.n_features_in_)
        active = np.flatnonzero(self.coef_)
        mean, scale, coef = self.mean_[active], self.scale_[active], self.coef_[active]
        out = np.empty(X.shape[0])
        step = chunk_rows(max(active.size, 1))
        for start in range(0, X.shape[0], step):
            Z = (np.asarray(X[start : start + step, active], dtype=np.float64) - mean) / scale
            out[start : start + step] = Z @ coef + self.intercept_
        return out

    @property
    def selected_params_(self) -> dict:
        self._check_fitted()
        return {"alpha": self.alpha_}

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("RidgeProbe is not fitted yet: call fit(X, y, X_val, y_val) first")


def _standardize_active(X: np.ndarray, standardizer: Standardizer, active: np.ndarray) -> np.ndarray:
    """Standardised float64 copy of the active (non-constant) columns of X: N x D_active."""
    columns = np.asarray(X[:, active], dtype=np.float64)
    columns -= standardizer.mean[active]
    columns /= standardizer.scale[active]
    return np.ascontiguousarray(columns)
