"""The task classification of one summary row (pretraining / architecture / no benefit)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ptransfer.analysis.panels import ABLATIONS, DEFAULT_MARGIN, gain, higher_is_better

ARCHITECTURE = "benefits from architecture, not pretraining"
PRETRAINING = "benefits from pretraining"
NO_BENEFIT = "no benefit"
MIXED = "mixed"
INCOMPLETE = "incomplete"


def beats(mean_a: float, sd_a: float, mean_b: float, sd_b: float, metric: str,
          margin: float = DEFAULT_MARGIN) -> bool:
    """Whether score A is better than score B beyond noise.

    True when ``gain(mean_a, mean_b) > max(threshold, sd_a, sd_b)`` where ``threshold`` is
    ``margin`` (metric units) for higher-is-better metrics and ``margin * |mean_b|`` for
    lower-is-better ones (mse has no fixed scale); a NaN sd (one seed) counts as 0. False
    when either mean is NaN.
    """
    if not (np.isfinite(mean_a) and np.isfinite(mean_b)):
        return False
    threshold = margin if higher_is_better(metric) else margin * abs(mean_b)
    noise = np.nan_to_num(np.array([sd_a, sd_b], dtype=float), nan=0.0).max()
    return bool(gain(mean_a, mean_b, metric) > max(threshold, noise))


def classify(row: pd.Series, margin: float = DEFAULT_MARGIN) -> str:
    """The paper's three classes, from best-validation-layer scores of one summary row.

    - PRETRAINING: pretrained beats every ablation present and beats one-hot;
    - ARCHITECTURE: otherwise, some ablation beats one-hot and pretrained does not beat
      that ablation (the architecture alone gets there);
    - NO_BENEFIT: neither pretrained nor any ablation beats one-hot;
    - MIXED: none of these holds (e.g. pretrained beats one-hot, ties an ablation that
      itself does not beat one-hot); INCOMPLETE: pretrained, one-hot or both ablations
      are missing.
    ``beats`` is as defined in ``beats`` with ``margin``.
    """
    metric = row["metric"]

    def score(name: str) -> tuple[float, float]:
        return row[f"{name}_best"], row[f"{name}_best_sd"]

    present = [a for a in ABLATIONS[1:] if np.isfinite(row[f"{a}_best"])]
    anchors = np.isfinite(row["pretrained_best"]) and np.isfinite(row["onehot_best"])
    if not (anchors and present):
        return INCOMPLETE
    pre, onehot = score("pretrained"), score("onehot")
    pre_beats = {a: beats(*pre, *score(a), metric, margin) for a in present}
    abl_beats_onehot = {a: beats(*score(a), *onehot, metric, margin) for a in present}
    if all(pre_beats.values()) and beats(*pre, *onehot, metric, margin):
        return PRETRAINING
    if any(abl_beats_onehot[a] and not pre_beats[a] for a in present):
        return ARCHITECTURE
    if not beats(*pre, *onehot, metric, margin) and not any(abl_beats_onehot.values()):
        return NO_BENEFIT
    return MIXED
