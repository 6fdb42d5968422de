"""The declared smallest effect of interest per metric (``analysis.margin``).

A margin is used only through interval tests: "equivalent" means the difference's 90 %
interval lies inside (-margin, +margin) (TOST at 5 %), never that a point estimate is small.
Why these defaults: docs/statistics.md ("Margins").
"""

from __future__ import annotations

import math

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
        margins[metric] = number
    return margins


def margin_for(metric: str, margins: dict[str, float | None] | None) -> float | None:
    return (margins if margins is not None else DEFAULT_MARGINS).get(metric)
