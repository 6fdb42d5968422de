"""Per-protein classification probe: multinomial logistic regression, C chosen on validation.

Features are standardised with training statistics; scikit-learn's L-BFGS logistic
regression (multinomial for three or more classes) is fitted once per ``C`` on train,
warm-started from the previous (more regularised) solution, and the ``C`` with the best
validation ``metric`` is kept (ties -> smaller C, the more regularised model).

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
from ptransfer.heads.standardize import fit_standardizer
from ptransfer.metrics import METRICS, score

log = logging.getLogger(__name__)

DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 2, 7))


class LogisticProbe(BaseEstimator):
    """Multinomial logistic regression on standardised features (scikit-learn contract).

    After ``fit``: ``classes_`` (0 .. n_classes-1), ``C_`` (chosen), ``val_scores_``
    ({C: validation score}), ``mean_`` / ``scale_`` (D), ``model_`` (the fitted
    ``LogisticRegression`` for ``C_``), ``n_not_converged_`` (fits that hit ``max_iter``).
    """

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
        Z, Z_val = standardizer.transform(X), standardizer.transform(X_val)

        models, val_scores = self._fit_path(Z, y, Z_val, y_val, Cs)
        best = select_best(Cs, val_scores, self.metric, prefer_larger=False)
        self.model_ = models[best]
        self.C_ = float(Cs[best])
        self.val_scores_ = dict(zip((float(c) for c in Cs), val_scores))
        return self

    def _fit_path(self, Z, y, Z_val, y_val, Cs: np.ndarray) -> tuple[list, list[float]]:
        """One model per C (ascending, warm-started) and its validation score."""
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
            proba = self._expand(model, model.predict_proba(Z_val))
            val_scores.append(score(self.metric, y_val, proba))
        if self.n_not_converged_:
            log.warning(
                "LogisticProbe: %d of %d fits stopped at max_iter=%d before converging",
                self.n_not_converged_, len(Cs), self.max_iter,
            )
        return models, val_scores

    def _expand(self, model: LogisticRegression, proba: np.ndarray) -> np.ndarray:
        """Probabilities over the classes seen in training -> all task classes (N x C)."""
        full = np.zeros((proba.shape[0], self.classes_.size))
        full[:, model.classes_] = proba
        return full

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of ``X`` (N x D): N x n_classes, columns in ``classes_`` order."""
        if not hasattr(self, "model_"):
            raise NotFittedError("LogisticProbe is not fitted yet: call fit(X, y, X_val, y_val) first")
        X = check_features(X, "X", n_features=self.n_features_in_)
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return self._expand(self.model_, self.model_.predict_proba(Z))

    def predict(self, X) -> np.ndarray:
        """Most probable class index of each row of ``X``: N."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    @property
    def selected_params_(self) -> dict:
        if not hasattr(self, "C_"):
            raise NotFittedError("LogisticProbe is not fitted yet")
        return {"C": self.C_}
