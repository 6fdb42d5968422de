"""Input checks shared by the heads: every bad array is a ``ValueError`` naming the argument.

The heads see arrays, not files, so the most precise pointer to a problem is the argument
name (``X``, ``X_val``, ``y``...) and the first offending row.
"""

from __future__ import annotations

import numpy as np

IGNORE = -1  # per-residue label excluded from fitting and scoring (tasks.base.IGNORE)


def check_features(X, name: str, n_features: int | None = None, finite: bool = True) -> np.ndarray:
    """``X`` as a 2-D float array (N x D, dtype kept: float16 stays float16, no copy).

    ``finite=False`` skips the NaN/inf scan, for callers whose own chunked pass over the
    rows they use checks each chunk instead (see ``FeatureMoments``).
    """
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N x D), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    if not np.issubdtype(array.dtype, np.floating):
        if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
            raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
        array = array.astype(np.float64)
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(f"{name} has {array.shape[1]} features, expected {n_features}")
    if finite:
        # Chunked so a float16 array of millions of rows never needs a same-sized mask.
        step = max(1, (1 << 22) // max(1, array.shape[1]))
        for start in range(0, array.shape[0], step):
            first_bad_row(array[start : start + step], name, row_offset=start)
    return array


def first_bad_row(
    chunk: np.ndarray, name: str, row_offset: int = 0, row_ids: np.ndarray | None = None
) -> None:
    """Raise naming the first row of ``chunk`` (N x D) holding NaN or inf.

    The row is reported as ``row_ids[i]`` when given (chunk gathered from a larger array),
    else as ``row_offset + i``.
    """
    finite_rows = np.isfinite(chunk).all(axis=1)
    if not finite_rows.all():
        position = int(np.flatnonzero(~finite_rows)[0])
        row = int(row_ids[position]) if row_ids is not None else row_offset + position
        raise ValueError(f"{name} has NaN/inf at row {row}")


def check_targets(y, n_rows: int, name: str) -> np.ndarray:
    """Regression targets: 1-D finite float64 array of length ``n_rows``."""
    array = np.asarray(y, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] != n_rows:
        raise ValueError(f"{name} must be 1-D with {n_rows} rows (one per row of X), got {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name} has NaN/inf at row {int(bad[0])} ({bad.size} rows in all)")
    return array


def check_labels(
    y, n_rows: int, name: str, n_classes: int | None = None, allow_ignore: bool = False
) -> np.ndarray:
    """Class indices: 1-D int64 array of length ``n_rows`` with values in ``0 .. n_classes-1``.

    ``allow_ignore`` also admits ``IGNORE`` (-1) for residues excluded from fitting.
    """
    array = np.asarray(y)
    if array.ndim != 1 or array.shape[0] != n_rows:
        raise ValueError(f"{name} must be 1-D with {n_rows} rows (one per row of X), got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        whole = np.isfinite(array.astype(np.float64)) & (array == np.round(array))
        if not whole.all():
            row = int(np.flatnonzero(~whole)[0])
            raise ValueError(f"{name} must hold integer class indices; row {row} is {array[row]!r}")
    array = array.astype(np.int64)
    low = IGNORE if allow_ignore else 0
    too_low = array < low
    too_high = array >= n_classes if n_classes is not None else np.zeros_like(too_low)
    bad = np.flatnonzero(too_low | too_high)
    if bad.size:
        row = int(bad[0])
        allowed = f"{low} .. {n_classes - 1}" if n_classes is not None else f">= {low}"
        raise ValueError(f"{name}: row {row} has label {array[row]}, expected {allowed}")
    return array


def resolve_n_classes(*label_arrays: np.ndarray, given: int | None, owner: str) -> int:
    """Number of classes: ``given`` when set (checked >= 2), else 1 + the largest label seen."""
    if given is not None:
        if int(given) != given or given < 2:
            raise ValueError(f"{owner}: n_classes must be an integer >= 2, got {given!r}")
        return int(given)
    largest = max(int(labels.max()) for labels in label_arrays if labels.size)
    return max(largest + 1, 2)
