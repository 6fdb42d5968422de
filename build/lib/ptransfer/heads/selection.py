"""Hyper-parameter selection on the validation split, one rule for every head.

The best grid value is the one with the best validation score under the metric's
direction (``metrics.HIGHER_IS_BETTER``). Ties go to the more regularised model:
``prefer_larger=True`` for ridge alpha and weight decay, ``False`` for logistic ``C``.
Scores equal to 1e-12 relative count as tied, so rank metrics that saturate (identical
Spearman for several large alphas) and last-bit rounding do not decide. A nan score
(metric undefined, e.g. constant predictions) never wins; when every score is nan the
most regularised value is chosen and a warning is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ptransfer.metrics import HIGHER_IS_BETTER

log = logging.getLogger(__name__)

TIE_RTOL = 1e-12


def check_metric(metric: str, allowed: Sequence[str], owner: str) -> None:
    """Raise naming ``owner`` when ``metric`` is not one of ``allowed``."""
    if metric not in allowed:
        raise ValueError(f"{owner}: metric {metric!r} is not one of {list(allowed)}")


def check_grid(values, name: str, owner: str, positive: bool = True) -> np.ndarray:
    """A hyper-parameter grid as a non-empty 1-D float64 array of distinct finite values."""
    grid = np.asarray(list(values) if not np.isscalar(values) else [values], dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"{owner}: {name} must be a non-empty list of numbers, got {values!r}")
    if not np.all(np.isfinite(grid)) or (positive and np.any(grid <= 0)) or np.any(grid < 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{owner}: every value of {name} must be finite and {kind}, got {values!r}")
    if np.unique(grid).size != grid.size:
        raise ValueError(f"{owner}: {name} has repeated values: {values!r}")
    return grid


def select_best(grid: Sequence[float], scores: Sequence[float], metric: str, prefer_larger: bool) -> int:
    """Index into ``grid`` of the value with the best validation score (rule in module doc)."""
    grid = np.asarray(grid, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    order = np.argsort(grid)
    if prefer_larger:
        order = order[::-1]
    best = int(order[0])
    for index in order[1:]:
        candidate, incumbent = scores[index], scores[best]
        if np.isnan(candidate):
            continue
        if np.isnan(incumbent):
            best = int(index)
            continue
        tied = abs(candidate - incumbent) <= TIE_RTOL * max(abs(candidate), abs(incumbent))
        if not tied and sign * (candidate - incumbent) > 0:
            best = int(index)
    if np.isnan(scores[best]):
        log.warning(
            "every validation %s is nan (metric undefined, e.g. constant predictions); "
            "choosing the most regularised value %g", metric, grid[best],
        )
    return best
