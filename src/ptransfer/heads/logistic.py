"""Per-protein classification probe: multinomial logistic regression, C chosen on validation.

Features are standardised with training statistics; scikit-learn's L-BFGS logistic
regression (multinomial for three or more classes) is fitted once per ``C`` on train,
warm-started from the previous (more regularised) solution, and the ``C`` with the best
validation ``metric`` is kept (ties -> smaller C, the more regularised model).

Memory: the one full-size copy is the standardised training matrix, in the working dtype
(float32 for float16/float32 features, float64 for float64 input: a wider copy than the
features themselves carries no extra information, and per-protein one-hot of long proteins
has hundreds of thousands of columns). Validation scoring and ``predict_proba`` standardise
and predict ``CHUNK_ELEMENTS`` values at a time.

Classes are the task's class indices ``0 .. n_classes-1``. ``predict_proba`` always returns
one column per task class, in that order, even when a class is absent from the training
split (its column is 0).
"""

from __future__ import annotations

import copy
import logging
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression

from ptransfer.heads.inputs import check_features, check_labels, resolve_n_classes
from ptransfer.heads.selection import check_grid, check_metric, select_best
from ptransfer.heads.standardize import chunk_rows, fit_standardizer
from ptransfer.metrics import METRICS, score

log = logging.getLogger(__name__)

DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 2, 7))


class LogisticProbe(BaseEstimator):
    """Multinomial logistic regression on standardised features (scikit-learn contract).

    After ``fit``: ``classes_`` (0 .. n_classes-1), ``C_`` (chosen), ``val_scores_``
    ({C: validation score}), ``mean_`` / ``scale_`` (D), ``model_`` (the fitted
    ``LogisticRegression`` for ``C_``), ``n_not_converged_`` (fits that hit ``max_iter``),
    ``dtype_`` (the working dtype, see the module docstring).
    """

    # How ``heads.cross_validation`` reaches the grid: the parameter that holds it, and the
    # tie rule of ``select_best`` (True: the larger value, the more regularised model).
    grid_param = "Cs"
    prefer_larger = False

    @property
    def selection_metric(self) -> str:
        """The validation score the grid is chosen by (``metric``)."""
        return self.metric

    def __init__(
        self,
        Cs=DEFAULT_CS,
        metric: str = "accuracy",
        n_classes: int | None = None,
        seed: int = 0,
        max_iter: int = 1000,
        tol: float = 1e-4,
    ):
        self.Cs = Cs
        self.metric = metric
        self.n_classes = n_classes
        self.seed = seed
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y, X_val, y_val, n_classes: int | None = None) -> LogisticProbe:
        """Fit on ``X`` (N x D), ``y`` (N class indices); choose C on ``X_val``, ``y_val``.

        ``n_classes`` (here or in ``__init__``; default 1 + largest label) fixes the columns
        of ``predict_proba``.
        """
        Cs = np.sort(check_grid(self.Cs, "Cs", "LogisticProbe"))
        check_metric(self.metric, METRICS["classification"], "LogisticProbe")
        given = n_classes if n_classes is not None else self.n_classes
        X = check_features(X, "X")
        X_val = check_features(X_val, "X_val", n_features=X.shape[1])
        y = check_labels(y, X.shape[0], "y", given)
        y_val = check_labels(y_val, X_val.shape[0], "y_val", given)
        self.classes_ = np.arange(resolve_n_classes(y, y_val, given=given, owner="LogisticProbe"))
        if np.unique(y).size < 2:
            raise ValueError(f"LogisticProbe: y holds a single class ({int(y[0])}); need two or more")
        standardizer = fit_standardizer(X, name="X")
        self.mean_, self.scale_ = standardizer.mean, standardizer.scale
        self.n_features_in_ = X.shape[1]
        self.dtype_ = working_dtype(X)
        Z = standardizer.transform(X, dtype=self.dtype_)  # N x D, the one full-size copy

        models, val_scores = self._fit_path(Z, y, X_val, y_val, Cs)
        best = select_best(Cs, val_scores, self.metric, prefer_larger=False)
        self.model_ = models[best]
        self.C_ = float(Cs[best])
        self.val_scores_ = dict(zip((float(c) for c in Cs), val_scores))
        return self

    def _fit_path(self, Z, y, X_val, y_val, Cs: np.ndarray) -> tuple[list, list[float]]:
        """One model per C (ascending, warm-started) on ``Z`` (N x D, standardised) and its
        score on the raw validation features ``X_val`` (M x D, standardised in chunks)."""
        model = LogisticRegression(
            solver="lbfgs", max_iter=self.max_iter, tol=self.tol, random_state=self.seed,
            warm_start=True,
        )
        models, val_scores = [], []
        self.n_not_converged_ = 0
        for C in Cs:
            model.set_params(C=float(C))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(Z, y)
            self.n_not_converged_ += any(issubclass(w.category, ConvergenceWarning) for w in caught)
            models.append(copy.deepcopy(model))
            proba = self._proba(model, X_val)
            val_scores.append(score(self.metric, y_val, proba))
        if self.n_not_converged_:
            log.warning(
                "LogisticProbe: %d of %d fits stopped at max_iter=%d before converging",
                self.n_not_converged_, len(Cs), self.max_iter,
            )
        return models, val_scores

    def _proba(self, model: LogisticRegression, X: np.ndarray) -> np.ndarray:
        """Probabilities of raw features ``X`` (N x D) over all task classes: N x C.

        Rows are standardised chunk by chunk (a chunk of ``CHUNK_ELEMENTS`` values in the
        working dtype), so no standardised copy of a whole split is made; classes absent
        from training keep probability 0.
        """
        full = np.zeros((X.shape[0], self.classes_.size))
        mean, scale = self.mean_.astype(self.dtype_), self.scale_.astype(self.dtype_)
        step = chunk_rows(X.shape[1])
        for start in range(0, X.shape[0], step):
            chunk = np.asarray(X[start : start + step], dtype=self.dtype_) - mean
            chunk /= scale
            full[start : start + step, model.classes_] = model.predict_proba(chunk)
        return full

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of ``X`` (N x D): N x n_classes, columns in ``classes_`` order."""
        if not hasattr(self, "model_"):
            raise NotFittedError("LogisticProbe is not fitted yet: call fit(X, y, X_val, y_val) first")
        X = check_features(X, "X", n_features=self.n_features_in_)
        return self._proba(self.model_, X)

    def predict(self, X) -> np.ndarray:
        """Most probable class index of each row of ``X``: N."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    @property
    def selected_params_(self) -> dict:
        if not hasattr(self, "C_"):
            raise NotFittedError("LogisticProbe is not fitted yet")
        return {"C": self.C_}


def working_dtype(X: np.ndarray) -> np.dtype:
    """dtype of the standardised copy: float32 for float16/float32 features, else float64."""
    return np.result_type(X.dtype, np.float32)
