"""Summary tables of a results table: per-panel scores with the task classification.

``summary.csv`` / ``summary.md`` (``summary_table``, ``readable_summary``), ``repstat.csv``
(``ptransfer.analysis.repstat``); the scores come from ``ptransfer.analysis.panels``, the
classification from ``ptransfer.analysis.taxonomy``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ptransfer.analysis.panels import (
    ABLATIONS,
    DEFAULT_MARGIN,
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
from ptransfer.analysis.taxonomy import classify


def summary_table(df: pd.DataFrame, margin: float = DEFAULT_MARGIN) -> pd.DataFrame:
    """Per (task, eval_set, model, checkpoint): pretrained, random_init, stat_transfer
    (seed mean and sd) and one-hot scores at the last and best-validation layer, and the
    ``classification`` of the row (see ``classify``). See ``panel_scores`` for columns.
    """
    table = panel_scores(main_test_rows(df))
    table["classification"] = [classify(row, margin) for _, row in table.iterrows()]
    table["higher_is_better"] = table["metric"].map(higher_is_better)
    order = [*PANEL, "model", "checkpoint", *MODEL_INFO, "metric", "higher_is_better",
             "classification", *SCORE_COLUMNS, "pretrained_best_rel_depth",
             *SEED_COUNT_COLUMNS]
    return table[order]


def readable_summary(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The summary as text for reading: "mean ± sd" cells (sd over seeds, omitted with one
    seed), best-validation layer first, blank where a score is missing."""

    def cell(mean: float, sd: float) -> str:
        if not np.isfinite(mean):
            return ""
        return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if np.isfinite(sd) else "")

    out = summary[[*PANEL, "model", "checkpoint", "metric"]].copy()
    for choice in ("best", "last"):
        for name in (*ABLATIONS, "onehot"):
            out[f"{name} ({choice})"] = [
                cell(m, s) for m, s in zip(summary[f"{name}_{choice}"],
                                           summary[f"{name}_{choice}_sd"])]
    out["classification"] = summary["classification"]
    return out


def classification_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (task, eval_set, model) at the model's final checkpoint: the classification."""
    final = at_final_checkpoint(summary)
    return final[[*PANEL, "model", "checkpoint", "classification"]].reset_index(drop=True)


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


def write_tables(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write summary.csv, summary.md and repstat.csv (unrounded CSVs) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summary_table(df)
    paths = [out_dir / "summary.csv", out_dir / "summary.md", out_dir / "repstat.csv"]
    summary.to_csv(paths[0], index=False)
    paths[1].write_text(
        "# Summary: main test metric per task and test set\n\n"
        "`best`: layer chosen on validation (per seed); `last`: last layer; cells are "
        "mean ± sd over seeds. `classification` compares best-layer scores: A beats B when "
        f"its gain exceeds max({DEFAULT_MARGIN} (for mse: {DEFAULT_MARGIN} x B), sd of A, "
        "sd of B). Every column, unrounded: summary.csv.\n\n"
        + to_markdown(readable_summary(summary)))
    repstat(df).to_csv(paths[2], index=False)
    return paths
