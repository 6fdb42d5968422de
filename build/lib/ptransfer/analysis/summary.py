"""Summary tables of a results table, with intervals, comparisons and the task taxonomy.

``analyse`` turns a results table (and, under ``root``, the cells' ``predictions.parquet``)
into the ``intervals``, ``comparisons`` and ``taxonomy`` tables; ``summary_table`` /
``readable_summary`` give per-panel scores with the class and its evidence;
``write_tables`` writes summary.csv, summary.md, repstat.csv, intervals.csv,
comparisons.csv and taxonomy.csv. Rules: docs/statistics.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ptransfer.analysis.bootstrap import compute_replicates
from ptransfer.analysis.comparisons import (
    FULL_SCOPE,
    arms_of,
    comparisons_table,
    intervals_table,
)
from ptransfer.analysis.intervals import N_RESAMPLES
from ptransfer.analysis.panels import (
    ABLATIONS,
    LAYER_CHOICES,
    MODEL_INFO,
    PANEL,
    SCORE_COLUMNS,
    SEED_COUNT_COLUMNS,
    at_final_checkpoint,
    higher_is_better,
    main_test_rows,
    panel_scores,
)
from ptransfer.analysis.repstat import repstat
from ptransfer.analysis.taxonomy import taxonomy_table

GROUP = [*PANEL, "model", "checkpoint"]
CI_COLUMNS = [f"{name}_{choice}_ci_{end}" for choice in LAYER_CHOICES[::-1]
              for name in (*ABLATIONS, "onehot") for end in ("low", "high")]


@dataclass
class Analysis:
    """The three tables of ``analyse``."""

    intervals: pd.DataFrame
    comparisons: pd.DataFrame
    taxonomy: pd.DataFrame


def analyse(df: pd.DataFrame, root: str | Path | None = None,
            n_resamples: int = N_RESAMPLES, seed: int = 0) -> Analysis:
    """Intervals, comparisons and taxonomy of a results table.

    ``root``: where the cells' ``predictions.parquet`` files are (``collect``'s folder);
    None or a folder without them gives NaN intervals with a note, and classes that say so.
    """
    rows = main_test_rows(df)
    reps = compute_replicates(rows, root, n_resamples, seed)
    arms = arms_of(rows)
    comparisons = comparisons_table(arms, reps)
    return Analysis(intervals_table(arms, reps), comparisons,
                    taxonomy_table(arms, comparisons, reps))


def _interval_columns(intervals: pd.DataFrame) -> pd.DataFrame:
    """Per (task, eval_set, model, checkpoint): ``{arm}_{choice}_ci_{low,high}``."""
    if intervals.empty:
        return pd.DataFrame(columns=[*GROUP, *CI_COLUMNS])
    full = intervals[intervals["ablation_scope"] == FULL_SCOPE]
    encoders = full[full["arm"] != "onehot"]
    out = encoders[GROUP].drop_duplicates()
    for choice in LAYER_CHOICES:
        for name in ABLATIONS:
            part = encoders[(encoders["arm"] == name) & (encoders["layer_choice"] == choice)]
            part = part.drop_duplicates(GROUP)[[*GROUP, "ci_low", "ci_high"]].rename(
                columns={"ci_low": f"{name}_{choice}_ci_low",
                         "ci_high": f"{name}_{choice}_ci_high"})
            out = out.merge(part, on=GROUP, how="left")
        onehot = full[(full["arm"] == "onehot") & (full["layer_choice"] == choice)]
        onehot = onehot.drop_duplicates(PANEL)[[*PANEL, "ci_low", "ci_high"]].rename(
            columns={"ci_low": f"onehot_{choice}_ci_low", "ci_high": f"onehot_{choice}_ci_high"})
        out = out.merge(onehot, on=PANEL, how="left")
    return out


def _not_comparable(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per group: the distinct reasons some comparison of it was refused ("" when none)."""
    if comparisons.empty:
        return pd.DataFrame(columns=[*GROUP, "not_comparable"])
    reasons = comparisons.groupby(GROUP, sort=False)["not_comparable"].agg(
        lambda s: "; ".join(dict.fromkeys(r for r in s if r)))
    return reasons.reset_index()


def _merge(table: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Left merge on GROUP; an empty ``other`` (e.g. a table with one-hot only) adds its
    columns as NaN instead of failing on the empty frame's key dtypes."""
    if other.empty:
        return table.assign(**{c: np.nan for c in other.columns if c not in GROUP})
    return table.merge(other, on=GROUP, how="left")


def summary_table(df: pd.DataFrame, analysis: Analysis | None = None) -> pd.DataFrame:
    """Per (task, eval_set, model, checkpoint): every arm's seed mean and sd at the last and
    best-validation layer (``panel_scores``), their 95 % intervals (``*_ci_low/high``), the
    taxonomy ``classification`` with its ``evidence``, and ``not_comparable`` (why some
    comparison of the row was refused: probe, data fingerprint or precision differ)."""
    analysis = analysis if analysis is not None else analyse(df)
    table = panel_scores(main_test_rows(df))
    table = _merge(table, _interval_columns(analysis.intervals))
    taxonomy = analysis.taxonomy[[*GROUP, "class", "evidence"]].rename(
        columns={"class": "classification"})
    table = _merge(table, taxonomy)
    table = _merge(table, _not_comparable(analysis.comparisons))
    table["not_comparable"] = table["not_comparable"].fillna("")
    table["higher_is_better"] = table["metric"].map(higher_is_better)
    order = [*PANEL, "model", "checkpoint", *MODEL_INFO, "metric", "higher_is_better",
             "classification", *SCORE_COLUMNS, *CI_COLUMNS, "pretrained_best_rel_depth",
             *SEED_COUNT_COLUMNS, "not_comparable", "evidence"]
    return table.reindex(columns=order)


def readable_summary(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The summary as text: "mean ± sd [low, high]" (sd over seeds, omitted with one seed;
    95 % bootstrap interval, omitted when there are no predictions), best layer first."""

    def cell(mean: float, sd: float, low: float, high: float) -> str:
        if not np.isfinite(mean):
            return ""
        text = f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if np.isfinite(sd) else "")
        if np.isfinite(low) and np.isfinite(high):
            text += f" [{low:.{digits}f}, {high:.{digits}f}]"
        return text

    out = summary[[*PANEL, "model", "checkpoint", "metric"]].copy()
    for choice in ("best", "last"):
        for name in (*ABLATIONS, "onehot"):
            stem = f"{name}_{choice}"
            out[f"{name} ({choice})"] = [
                cell(*v) for v in zip(summary[stem], summary[f"{stem}_sd"],
                                      summary[f"{stem}_ci_low"], summary[f"{stem}_ci_high"])]
    out["classification"] = summary["classification"]
    out["evidence"] = summary["evidence"]
    return out


def classification_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (task, eval_set, model) at the model's final checkpoint: class and evidence."""
    final = at_final_checkpoint(summary)
    return final[[*GROUP, "classification", "evidence"]].reset_index(drop=True)


# ---------------------------------------------------------------- writing


def to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table; floats to ``digits`` decimals, NaN as blank."""

    def cell(value) -> str:
        if pd.api.types.is_scalar(value) and pd.isna(value):
            return ""
        if isinstance(value, float | np.floating):
            return f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


SUMMARY_INTRO = (
    "# Summary: main test metric per task and test set\n\n"
    "`best`: layer chosen on validation (per seed); `last`: last layer; cells are mean ± sd "
    "over seeds and the 95 % bootstrap interval over test proteins (seeds resampled too). "
    "`classification`: the taxonomy (benefits, aligned / benefits, not aligned / no benefit / "
    "inconclusive) decided from Holm-adjusted paired comparisons and trend intervals, no "
    "fixed margins; `evidence` gives the numbers (docs/statistics.md). Every column, "
    "unrounded: summary.csv; intervals.csv, comparisons.csv, taxonomy.csv.\n\n")


def write_tables(df: pd.DataFrame, out_dir: str | Path,
                 predictions_root: str | Path | None = None,
                 analysis: Analysis | None = None) -> list[Path]:
    """Write summary.csv, summary.md, repstat.csv, intervals.csv, comparisons.csv and
    taxonomy.csv (unrounded CSVs) into ``out_dir``; predictions are read under
    ``predictions_root`` (default ``out_dir``)."""
    out_dir = Path(out_dir)
    if analysis is None:
        analysis = analyse(df, predictions_root if predictions_root is not None else out_dir)
    summary = summary_table(df, analysis)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ["summary.csv", "summary.md", "repstat.csv", "intervals.csv", "comparisons.csv",
             "taxonomy.csv"]
    paths = [out_dir / name for name in names]
    summary.to_csv(paths[0], index=False)
    paths[1].write_text(SUMMARY_INTRO + to_markdown(readable_summary(summary)))
    repstat(df).to_csv(paths[2], index=False)
    analysis.intervals.to_csv(paths[3], index=False)
    analysis.comparisons.to_csv(paths[4], index=False)
    analysis.taxonomy.to_csv(paths[5], index=False)
    return paths
