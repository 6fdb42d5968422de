"""Streaming ridge classifier: sufficient statistics over chunks, every alpha in closed form.

For per-residue tasks whose features do not fit in memory at once. ``partial_fit`` adds a
chunk's float64 sufficient statistics (row count, per-class counts, sum x, X^T X, X^T Y,
per-feature min / max), all about a fixed shift (the first row seen) to avoid cancellation;
memory is O(D^2 + D C) whatever the number of rows. ``finalize`` standardises from the
accumulated moments, eigendecomposes the standardised covariance once and writes the
coefficients of every alpha.

Target convention (as ``sklearn.linear_model.RidgeClassifier``): Y is the one-hot coding
of y with entries +1 / -1; the model is a ridge regression of Y on standardised features
with an unpenalised intercept, and the predicted class is the argmax of the C outputs. Its
decision values therefore equal ``RidgeClassifier(alpha).decision_function`` on the same
standardised features (for three or more classes). Rows labelled ``IGNORE`` (-1) are skipped.

Typical use::

    clf = StreamingRidgeClassifier(alphas, n_classes=3)
    for X_chunk, y_chunk in train_chunks: clf.partial_fit(X_chunk, y_chunk)
    clf.finalize()
    scorer = StreamingScorer(len(alphas))
    for X_chunk, y_chunk in val_chunks: scorer.update(clf.decision_path(X_chunk), y_chunk)
    clf.select(int(np.argmax(scorer.accuracy())))   # or select_best(...) for the tie rule
    clf.predict(X_test)
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from ptransfer.heads.backend import ArrayBackend
from ptransfer.heads.inputs import check_features, check_labels, first_bad_row
from ptransfer.heads.ridge import DEFAULT_ALPHAS
from ptransfer.heads.selection import check_grid
from ptransfer.heads.standardize import chunk_rows, moments_to_standardizer


class StreamingRidgeClassifier(BaseEstimator):
    """Ridge classifier (one-hot +-1 targets) fitted from streamed chunks, all alphas at once.

    After ``finalize``: ``mean_`` / ``scale_`` (D), ``coef_path_`` (n_alphas x D x C, on
    standardised features), ``intercept_path_`` (n_alphas x C), ``n_seen_`` (labelled rows),
    ``n_ignored_`` (rows labelled -1). After ``select`` / ``set_alpha``: ``alpha_``,
    ``alpha_index_``, ``coef_`` (D x C), ``intercept_`` (C).
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, n_classes: int = 3, device: str = "cpu"):
        self.alphas = alphas
        self.n_classes = n_classes
        self.device = device

    # ------------------------------------------------------------------ accumulation

    def partial_fit(self, X, y) -> StreamingRidgeClassifier:
        """Add a chunk: ``X`` (N x D, any float dtype), ``y`` (N, class index or -1)."""
        if not hasattr(self, "sums_"):
            self._start(check_features(X, "X", finite=False).shape[1])
        X = check_features(X, "X", n_features=self.sums_["x"].shape[0], finite=False)
        y = check_labels(y, X.shape[0], "y", self.n_classes, allow_ignore=True)
        labelled = np.flatnonzero(y >= 0)
        self.n_ignored_ += int(y.size - labelled.size)
        backend, sums = self._backend, self.sums_
        for start in range(0, labelled.size, chunk_rows(X.shape[1])):
            rows = labelled[start : start + chunk_rows(X.shape[1])]
            chunk = np.asarray(X[rows])
            if self.shift_ is None:
                self.shift_ = chunk[0].astype(np.float64)
                self._shift_on_device = backend.asarray(self.shift_)
            shifted = backend.asarray(chunk) - self._shift_on_device  # n x D float64
            column_sums = shifted.sum(0)
            if not np.isfinite(backend.to_numpy(column_sums)).all():  # NaN / inf propagate
                first_bad_row(chunk, "X", row_ids=rows)  # row index within this call's X
            one_hot = backend.one_hot(y[rows], self.n_classes)  # n x C, 0/1
            backend.add_gram(sums["xx"], shifted)
            sums["xy"] += shifted.T @ one_hot
            sums["x"] += column_sums
            sums["y"] += one_hot.sum(0)
            # Range in shifted coordinates (exact for float16/32 input): max == min <=> constant.
            low, high = backend.column_range(shifted)
            self._low, self._high = np.minimum(self._low, low), np.maximum(self._high, high)
            self.n_seen_ += rows.size
        return self

    def _start(self, n_features: int) -> None:
        """Validate the settings and allocate the accumulators (first ``partial_fit``)."""
        self._alphas = check_grid(self.alphas, "alphas", "StreamingRidgeClassifier")
        if int(self.n_classes) != self.n_classes or self.n_classes < 2:
            raise ValueError(f"StreamingRidgeClassifier: n_classes must be >= 2, got {self.n_classes!r}")
        self._backend = ArrayBackend(self.device, owner="StreamingRidgeClassifier")
        zeros = self._backend.zeros
        self.sums_ = {"xx": zeros(n_features, n_features), "xy": zeros(n_features, self.n_classes),
                      "x": zeros(n_features), "y": zeros(self.n_classes)}
        self.shift_ = None
        self._low = np.full(n_features, np.inf)
        self._high = np.full(n_features, -np.inf)
        self.n_seen_ = 0
        self.n_ignored_ = 0

    # ------------------------------------------------------------------ solving

    def finalize(self) -> StreamingRidgeClassifier:
        """Solve every alpha from the accumulated statistics (may be called again after more
        ``partial_fit`` calls)."""
        if not getattr(self, "n_seen_", 0):
            raise ValueError("StreamingRidgeClassifier.finalize: no labelled rows seen; "
                             "call partial_fit(X, y) with rows labelled >= 0 first")
        backend, n = self._backend, self.n_seen_
        sums = {key: backend.to_numpy(value) for key, value in self.sums_.items()}
        xx = sums["xx"]
        shifted_mean, class_freq = sums["x"] / n, sums["y"] / n
        standardizer = moments_to_standardizer(
            n, self.shift_, sums["x"], np.diag(xx), constant=self._high == self._low
        )
        self.mean_, self.scale_ = standardizer.mean, standardizer.scale
        active, scale = standardizer.active, standardizer.scale[standardizer.active]
        # Centred scatter and cross products; +-1 targets are 2 * one-hot - 1, so their
        # centred cross product is twice the one-hot one and their mean is 2 p - 1.
        scatter = xx - n * np.outer(shifted_mean, shifted_mean)
        cross = 2.0 * (sums["xy"] - n * np.outer(shifted_mean, class_freq))
        gram = scatter[np.ix_(active, active)] / np.outer(scale, scale)  # D_a x D_a
        eigenvalues, vectors = backend.eigh(backend.asarray(gram))
        eigenvalues = backend.to_numpy(eigenvalues).clip(min=0.0)
        vectors = backend.to_numpy(vectors)
        projected = vectors.T @ (cross[active] / scale[:, None])  # D_a x C
        shrink = 1.0 / (eigenvalues[None, :] + self._alphas[:, None])  # n_alphas x D_a
        self._active = active
        self.coef_path_ = np.zeros((self._alphas.size, self.mean_.size, self.n_classes))
        for index, factors in enumerate(shrink):  # V diag(1 / (lam + alpha)) V^T B, per alpha
            self.coef_path_[index, active, :] = vectors @ (factors[:, None] * projected)
        self.intercept_path_ = np.tile(2.0 * class_freq - 1.0, (self._alphas.size, 1))
        if hasattr(self, "alpha_index_"):
            self.select(self.alpha_index_)
        return self

    def decision_path(self, X) -> np.ndarray:
        """Decision values of ``X`` (N x D) for every alpha: n_alphas x N x C (float64).

        Memory is n_alphas x N x C; feed large sets in chunks (``StreamingScorer``).
        """
        self._check_finalized()
        X = check_features(X, "X", n_features=self.mean_.size, finite=False)
        active = self._active  # features constant in training have zero coefficients
        n_alphas = self._alphas.size
        flat_coef = self.coef_path_[:, active, :].transpose(1, 0, 2).reshape(active.size, -1)
        out = np.empty((X.shape[0], n_alphas, self.n_classes))
        step = chunk_rows(max(active.size, 1))
        for start in range(0, X.shape[0], step):
            chunk = np.asarray(X[start : start + step, active], dtype=np.float64)
            first_bad_row(chunk, "X", row_offset=start)
            standardized = (chunk - self.mean_[active]) / self.scale_[active]
            out[start : start + step] = (standardized @ flat_coef).reshape(-1, n_alphas, self.n_classes)
        return out.transpose(1, 0, 2) + self.intercept_path_[:, None, :]

    # ------------------------------------------------------------------ one alpha

    def select(self, alpha_index: int) -> StreamingRidgeClassifier:
        """Use ``alphas[alpha_index]`` for ``decision_function`` / ``predict``."""
        self._check_finalized()
        if int(alpha_index) != alpha_index or not 0 <= alpha_index < self._alphas.size:
            raise ValueError(f"alpha_index must be in 0 .. {self._alphas.size - 1}, got {alpha_index!r}")
        self.alpha_index_ = int(alpha_index)
        self.alpha_ = float(self._alphas[self.alpha_index_])
        self.coef_ = self.coef_path_[self.alpha_index_]
        self.intercept_ = self.intercept_path_[self.alpha_index_]
        return self

    def set_alpha(self, alpha: float) -> StreamingRidgeClassifier:
        """Use the grid value equal (to 1e-9 relative) to ``alpha``."""
        self._check_finalized()
        matches = np.flatnonzero(np.isclose(self._alphas, alpha, rtol=1e-9, atol=0.0))
        if matches.size == 0:
            raise ValueError(f"alpha {alpha!r} is not in the grid {self._alphas.tolist()}")
        return self.select(int(matches[0]))

    def decision_function(self, X) -> np.ndarray:
        """Decision values of ``X`` (N x D) for the selected alpha: N x C."""
        if not hasattr(self, "alpha_index_"):
            raise NotFittedError("no alpha selected: call select(index) or set_alpha(alpha)")
        X = check_features(X, "X", n_features=self.mean_.size)
        standardized = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return standardized @ self.coef_ + self.intercept_

    def predict(self, X) -> np.ndarray:
        """Predicted class index of each row of ``X``: N."""
        return np.argmax(self.decision_function(X), axis=1)

    @property
    def selected_params_(self) -> dict:
        if not hasattr(self, "alpha_"):
            raise NotFittedError("no alpha selected: call select(index) or set_alpha(alpha)")
        return {"alpha": self.alpha_}

    def _check_finalized(self) -> None:
        if not hasattr(self, "coef_path_"):
            raise NotFittedError("StreamingRidgeClassifier is not finalized: call partial_fit "
                                 "on every chunk, then finalize()")


class StreamingScorer:
    """Per-alpha accuracy accumulated over chunks of ``decision_path`` output."""

    def __init__(self, n_alphas: int):
        self.n_alphas = n_alphas
        self.correct_ = np.zeros(n_alphas, dtype=np.int64)
        self.n_ = 0

    def update(self, decision_path: np.ndarray, y) -> StreamingScorer:
        """Add a chunk: ``decision_path`` n_alphas x N x C, ``y`` (N, class index or -1)."""
        decision_path = np.asarray(decision_path)
        if decision_path.ndim != 3 or decision_path.shape[0] != self.n_alphas:
            raise ValueError(f"decision_path must be n_alphas x N x C with n_alphas = "
                             f"{self.n_alphas}, got shape {decision_path.shape}")
        y = check_labels(y, decision_path.shape[1], "y", decision_path.shape[2], allow_ignore=True)
        labelled = y >= 0
        predicted = np.argmax(decision_path[:, labelled, :], axis=2)  # n_alphas x N_labelled
        self.correct_ += (predicted == y[labelled][None, :]).sum(axis=1)
        self.n_ += int(labelled.sum())
        return self

    def accuracy(self) -> np.ndarray:
        """Accuracy of every alpha over the rows seen so far: n_alphas."""
        if self.n_ == 0:
            raise ValueError("StreamingScorer.accuracy: no labelled rows seen")
        return self.correct_ / self.n_
