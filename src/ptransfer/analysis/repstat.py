"""``repstat``: the paper's one-sample t-test of pretrained against each ablation's seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ptransfer.analysis.panels import (
    ABLATIONS,
    LAYER_CHOICES,
    ONEHOT_FAMILY,
    PANEL,
    SEED_COUNT_COLUMNS,
    SUMMARY_KEY,
    higher_is_better,
    main_test_rows,
    panel_scores,
    seed_scores,
)


def one_sided_p(ablation_values: np.ndarray, pretrained: float, metric: str) -> float:
    """p-value of H1 "pretrained is better than the ablation's seed distribution".

    The paper's test, kept for comparability: one-sample t-test of the ablation's seed
    scores (n) against ``pretrained`` taken as exact (scipy.stats.ttest_1samp, alternative
    "less" when higher is better, "greater" for mse; n - 1 degrees of freedom). NaN with
    fewer than 2 finite seed scores, and NaN when the seed scores have zero variance: the
    t statistic is then undefined, and scipy's limit (p = 0 or 1) would claim a certainty
    that two or three identical seeds do not give. The paired bootstrap in
    ``comparisons.csv`` is the test the conclusions use.
    """
    values = np.asarray(ablation_values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2 or not np.isfinite(pretrained) or np.ptp(values) == 0.0:
        return float("nan")
    alternative = "less" if higher_is_better(metric) else "greater"
    return float(stats.ttest_1samp(values, pretrained, alternative=alternative).pvalue)


def _repstat_choice(scores: pd.DataFrame, table: pd.DataFrame, choice: str) -> pd.DataFrame:
    """Columns ``{choice}_*`` of repstat for one layer choice, aligned with ``table`` (one
    row per group, scope and configuration: seeds of other configurations never mix)."""
    keys = SUMMARY_KEY
    by_cell = scores.groupby([*keys, "ablation"])["value"].apply(np.asarray).to_dict()
    sign = np.where(table["metric"].map(higher_is_better), 1.0, -1.0)
    pretrained = table[f"pretrained_{choice}"]
    out = pd.DataFrame({f"{choice}_pretrained": pretrained}, index=table.index)
    for ablation in ABLATIONS[1:]:
        out[f"{choice}_{ablation}_mean"] = table[f"{ablation}_{choice}"]
        out[f"{choice}_{ablation}_sd"] = table[f"{ablation}_{choice}_sd"]
        out[f"{choice}_gain_vs_{ablation}"] = sign * (pretrained - table[f"{ablation}_{choice}"])
        out[f"{choice}_p_vs_{ablation}"] = [
            one_sided_p(by_cell.get((*(row[k] for k in keys), ablation), np.array([])),
                        row[f"pretrained_{choice}"], row["metric"])
            for _, row in table.iterrows()]
    out[f"{choice}_onehot"] = table[f"onehot_{choice}"]
    out[f"{choice}_gain_vs_onehot"] = sign * (pretrained - table[f"onehot_{choice}"])
    return out


def repstat(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, checkpoint, task, eval_set): is pretraining better than its ablations?

    For the last and best-validation layer (prefix ``last_`` / ``best_``): the pretrained
    score (seed mean), each ablation's seed mean, sd (ddof=1), ``gain_vs_<ablation>``
    (pretrained minus ablation, sign flipped for mse: positive = pretrained better) and
    ``p_vs_<ablation>`` (``one_sided_p``: NaN with fewer than 2 seeds), and the one-hot
    score with ``gain_vs_onehot`` (same sign convention). Seed counts: ``<ablation>_n_seeds``.
    """
    rows = main_test_rows(df)
    table = panel_scores(rows)
    encoders = rows[rows["family"] != ONEHOT_FAMILY]
    parts = [table[["model", "family", "n_params", "checkpoint", "checkpoint_step", *PANEL,
                    *[k for k in SUMMARY_KEY if k not in (*PANEL, "model", "checkpoint")],
                    "metric", *SEED_COUNT_COLUMNS]]]
    for choice in LAYER_CHOICES:
        parts.append(_repstat_choice(seed_scores(encoders, choice), table, choice))
    return pd.concat(parts, axis=1)
