"""The declared smallest effect of interest per metric (``analysis.margin``).

A margin is used only through interval tests: "equivalent" means the difference's 90 %
interval lies inside (-margin, +margin) (TOST at 5 %), never that a point estimate is small.
Why these defaults: docs/statistics.md ("Margins").
"""

from __future__ import annotations

import logging
import math

from ptransfer.metrics import RANGES

log = logging.getLogger(__name__)

# metric -> margin on the metric's own scale; None: no default (equivalence not tested).
DEFAULT_MARGINS: dict[str, float | None] = {
    "spearman": 0.02,
    "pearson": 0.02,
    "ndcg": 0.01,
    "accuracy": 0.01,
    "macro_f1": 0.01,
    "roc_auc": 0.01,
    "mse": None,  # depends on the target's scale: declare it (analysis.margin.mse=...)
}
PREFIXES = ("analysis.margin.", "--margin=")
# Above this fraction of the widest possible difference (2 for a correlation, 1 for accuracy)
# a margin is accepted with a warning: it would call differences "equivalent" that the
# defaults (1-2 % of it) resolve (docs/statistics.md, "Margins").
SANE_FRACTION = 0.1


def check_margin(metric: str, number: float) -> None:
    """Refuse a margin beyond the widest difference ``metric`` allows (every difference would
    be "equivalent"); warn above :data:`SANE_FRACTION` of it."""
    low, high = RANGES[metric]
    widest = high - low
    if number > widest:
        raise ValueError(f"analysis.margin.{metric}={number:g}: beyond the widest possible "
                         f"difference of two {metric} values ({widest:g}, the metric lies in "
                         f"[{low:g}, {high:g}]): every difference would be 'equivalent'")
    if number > SANE_FRACTION * widest:
        log.warning("analysis.margin.%s=%g is above %g (a tenth of the widest possible "
                    "difference, %g): differences up to %g will be called 'equivalent'",
                    metric, number, SANE_FRACTION * widest, widest, number)


def parse_margins(items: list[str] | None) -> dict[str, float | None]:
    """The defaults updated by ``metric=value`` items (``analysis.margin.spearman=0.03``,
    or ``spearman=0.03``); ``value`` may be ``null``. Errors name the item."""
    margins = dict(DEFAULT_MARGINS)
    for item in items or []:
        text = item
        for prefix in PREFIXES:
            text = text.removeprefix(prefix)
        metric, sep, value = text.partition("=")
        if not sep or metric not in DEFAULT_MARGINS:
            raise ValueError(f"analysis.margin: {item!r} is not METRIC=VALUE with METRIC one of "
                             f"{sorted(DEFAULT_MARGINS)}")
        if value.strip().lower() in ("null", "none", ""):
            margins[metric] = None
            continue
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"analysis.margin.{metric}: {value!r} is not a number") from None
        if not math.isfinite(number) or number <= 0:
            raise ValueError(f"analysis.margin.{metric}: must be a positive number, got {value}")
        check_margin(metric, number)
        margins[metric] = number
    return margins


def margin_for(metric: str, margins: dict[str, float | None] | None) -> float | None:
    return (margins if margins is not None else DEFAULT_MARGINS).get(metric)
