"""Feature standardisation with training statistics, computed in float64 over row chunks.

Every head standardises each feature to zero mean and unit variance (population variance,
as ``sklearn.preprocessing.StandardScaler``) using the training rows only. Statistics are
accumulated chunk by chunk so a float16 array of millions of residues is never copied whole
to float64, and about a shift (the first row) so a feature whose mean is large relative to
its spread keeps its variance (no cancellation in ``E[x^2] - E[x]^2``).

A feature that is exactly constant in training (max == min, e.g. a one-hot column never
active) gets scale 1 and is flagged ``constant``: it standardises to exactly 0 on the
training rows, so it never produces NaN and ridge solvers can drop it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptransfer.heads.inputs import first_bad_row

CHUNK_ELEMENTS = 1 << 22  # ~4M values (32 MB in float64) per chunk


def chunk_rows(n_features: int) -> int:
    """Rows per chunk so one float64 chunk holds about ``CHUNK_ELEMENTS`` values."""
    return max(1, CHUNK_ELEMENTS // max(1, n_features))


@dataclass
class Standardizer:
    """Per-feature ``mean`` and ``scale`` (D each) and the ``constant`` mask (D, bool)."""

    mean: np.ndarray
    scale: np.ndarray
    constant: np.ndarray

    @property
    def active(self) -> np.ndarray:
        """Indices of the features that vary in training (D_active)."""
        return np.flatnonzero(~self.constant)

    def transform(self, X: np.ndarray, dtype=np.float64) -> np.ndarray:
        """(X - mean) / scale as ``dtype``, N x D (C order); X may be float16.

        Filled chunk by chunk into one preallocated array, so the only full-size allocation
        is the result (no float64 temporary of the whole of X when ``dtype`` is narrower).
        """
        out = np.empty(X.shape, dtype=dtype)
        mean, scale = self.mean.astype(dtype), self.scale.astype(dtype)
        step = chunk_rows(X.shape[1])
        for start in range(0, X.shape[0], step):
            chunk = out[start : start + step]
            np.subtract(X[start : start + step], mean, out=chunk, casting="unsafe")
            chunk /= scale
        return out


def moments_to_standardizer(
    n: int, shift: np.ndarray, shifted_sum: np.ndarray, shifted_sumsq: np.ndarray,
    constant: np.ndarray,
) -> Standardizer:
    """Standardizer from sums of ``x - shift`` and ``(x - shift)^2`` over ``n`` rows (D each)."""
    shifted_mean = shifted_sum / n
    variance = np.maximum(shifted_sumsq / n - shifted_mean**2, 0.0)
    mean = shift + shifted_mean
    # A constant column's mean is its value exactly, so it centres to exactly zero.
    mean = np.where(constant, shift, mean)
    scale = np.sqrt(variance)
    scale = np.where(constant | (scale == 0.0), 1.0, scale)
    return Standardizer(mean=mean, scale=scale, constant=constant.copy())


class FeatureMoments:
    """Running per-feature sums of row chunks (float64, shifted by the first row seen).

    ``update(chunk)`` with N_i x D chunks, then ``standardizer()``. ``name`` and the running
    row count make a NaN/inf error point at the offending row of the caller's array.
    """

    def __init__(self, name: str = "X"):
        self.name = name
        self.n = 0
        self.shift: np.ndarray | None = None

    def update(self, chunk: np.ndarray, row_ids: np.ndarray | None = None) -> FeatureMoments:
        """Add the rows of ``chunk`` (N_i x D, any float dtype).

        ``row_ids`` (N_i) are the rows' indices in the caller's array, used in error messages.
        """
        chunk = np.asarray(chunk)
        if self.shift is None:
            n_features = chunk.shape[1]
            self.shift = chunk[0].astype(np.float64)
            self.sum, self.sumsq = np.zeros(n_features), np.zeros(n_features)
            self.low, self.high = np.full(n_features, np.inf), np.full(n_features, -np.inf)
        elif chunk.shape[1] != self.shift.shape[0]:
            raise ValueError(
                f"{self.name}: chunk has {chunk.shape[1]} features, earlier rows had "
                f"{self.shift.shape[0]}"
            )
        shifted = chunk.astype(np.float64) - self.shift
        column_sums = shifted.sum(axis=0)
        if not np.isfinite(column_sums).all():  # NaN / inf propagate into the sums
            first_bad_row(chunk, self.name, self.n, row_ids)
        self.sum += column_sums
        self.sumsq += np.einsum("nd,nd->d", shifted, shifted)
        # Range in shifted coordinates (exact for float16/32 input): max == min <=> constant.
        np.minimum(self.low, shifted.min(axis=0), out=self.low)
        np.maximum(self.high, shifted.max(axis=0), out=self.high)
        self.n += chunk.shape[0]
        return self

    def standardizer(self) -> Standardizer:
        if self.n == 0:
            raise ValueError(f"{self.name}: no rows seen, cannot standardise")
        return moments_to_standardizer(
            self.n, self.shift, self.sum, self.sumsq, constant=self.high == self.low
        )


def fit_standardizer(X: np.ndarray, rows: np.ndarray | None = None, name: str = "X") -> Standardizer:
    """Standardizer of ``X[rows]`` (all rows when None), one chunked float64 pass."""
    moments = FeatureMoments(name)
    index = np.arange(X.shape[0]) if rows is None else rows
    step = chunk_rows(X.shape[1])
    for start in range(0, index.size, step):
        selected = index[start : start + step]
        # Contiguous ranges slice without a gather copy.
        contiguous = selected.size and selected[-1] - selected[0] == selected.size - 1
        chunk = X[selected[0] : selected[-1] + 1] if contiguous else X[selected]
        moments.update(chunk, row_ids=selected)
    return moments.standardizer()
