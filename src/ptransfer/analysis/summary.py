"""Summary tables of a results table, with intervals, comparisons and the task taxonomy.

``analyse`` turns a results table (and, under ``root``, the cells' ``predictions.parquet``)
into the ``intervals``, ``comparisons``, ``taxonomy`` and ``depth`` tables;
``summary_table`` / ``readable_summary`` give per-panel scores with the class and its
evidence; ``write_tables`` writes summary.csv, summary.md, repstat.csv, intervals.csv,
comparisons.csv, taxonomy.csv and depth.csv. Rules: docs/statistics.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ptransfer.analysis.bootstrap import Replicates, compute_replicates
from ptransfer.analysis.comparisons import arms_of, intervals_table
from ptransfer.analysis.decisions import comparisons_table, final_checkpoints
from ptransfer.analysis.depth import depth_line, depth_table, shallow_layers, validation_layers
from ptransfer.analysis.finetune_verdicts import (
    FROZEN,
    arm_tune,
    finetune_comparisons,
    finetune_verdicts,
    frozen_rows,
    tunes_of,
    with_finetune,
)
from ptransfer.analysis.intervals import N_RESAMPLES
from ptransfer.analysis.margins import DEFAULT_MARGINS
from ptransfer.analysis.panels import (
    ABLATIONS,
    COMPARABILITY,
    FULL_SCOPE,
    GROUP,
    LAYER_CHOICES,
    MODEL_INFO,
    ONEHOT_FAMILY,
    ONEHOT_MATCH,
    PANEL,
    SCORE_COLUMNS,
    SEED_COUNT_COLUMNS,
    SUMMARY_KEY,
    at_final_checkpoint,
    higher_is_better,
    main_test_rows,
    panel_scores,
)
from ptransfer.analysis.repstat import repstat
from ptransfer.analysis.seed_pool import attach_pools
from ptransfer.analysis.selection import cv_tasks, selection_warnings, validation_sizes
from ptransfer.analysis.taxonomy import taxonomy_table

CI_COLUMNS = [f"{name}_{choice}_ci_{end}" for choice in LAYER_CHOICES[::-1]
              for name in (*ABLATIONS, "onehot") for end in ("low", "high")]


@dataclass
class Analysis:
    """The tables of ``analyse``, the selection warnings (task -> text) and the depth line."""

    intervals: pd.DataFrame
    comparisons: pd.DataFrame
    taxonomy: pd.DataFrame
    depth: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: dict = field(default_factory=dict)
    depth_line: str = ""


def _arms(rows: pd.DataFrame) -> list:
    arms = arms_of(rows) if len(rows) else []
    attach_pools(arms)  # one-seed arms of a stochastic probe borrow a seed variance
    return arms


def analyse(df: pd.DataFrame, root: str | Path | None = None,
            n_resamples: int = N_RESAMPLES, seed: int = 0,
            margins: dict | None = None) -> Analysis:
    """Intervals, comparisons, taxonomy and depth of a results table.

    ``root``: where the cells' ``predictions.parquet`` files are (``collect``'s folder);
    None or a folder without them gives NaN intervals with a note, and classes that say so.
    ``margins``: metric -> smallest effect of interest (``margins.DEFAULT_MARGINS``).
    Validation predictions serve the depth description (the shallowest layer as good as
    the best is chosen on validation) and the validation sizes (``selection``).
    """
    margins = margins if margins is not None else DEFAULT_MARGINS
    rows, val_rows = main_test_rows(df), main_test_rows(df, validation=True)
    val_reps = (compute_replicates(val_rows, root, n_resamples, seed,
                                   validation_layers(val_rows))
                if len(val_rows) else Replicates(n_resamples, seed))
    val_arms = _arms(val_rows)
    reps = compute_replicates(rows, root, n_resamples, seed,
                              shallow_layers(val_arms, val_reps, margins))
    arms = _arms(rows)
    # the paper's decisions, depth and classes see frozen arms; fine-tunes get their own
    tunes = tunes_of(rows)
    frozen = [a for a in arms if arm_tune(a, tunes) == FROZEN]
    frozen_val = [a for a in val_arms if arm_tune(a, tunes) == FROZEN]
    comparisons = comparisons_table(frozen, reps, margins)
    tuned = finetune_comparisons(arms, tunes, reps, margins)
    warnings = selection_warnings(validation_sizes(val_rows, val_reps), cv_tasks(val_rows))
    depth = depth_table(frozen, frozen_val, reps, val_reps, margins)
    encoders = [a for a in frozen if a.key["family"] != ONEHOT_FAMILY]
    taxonomy = with_finetune(taxonomy_table(frozen, comparisons, reps, warnings),
                             finetune_verdicts(tuned))
    return Analysis(intervals_table(arms, reps),
                    pd.concat([comparisons, tuned], ignore_index=True) if len(tuned)
                    else comparisons, taxonomy, depth, warnings,
                    depth_line(depth, final_checkpoints(encoders)))


ONEHOT_KEY = [*PANEL, *ONEHOT_MATCH]


def _interval_columns(intervals: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (keyed by ``SUMMARY_KEY``) with ``{arm}_{choice}_ci_{low,high}``: the
    intervals of the same arms, under the same probe, data and extraction."""
    if intervals.empty:
        return table.assign(**{c: np.nan for c in CI_COLUMNS})
    config = [*GROUP, *COMPARABILITY]
    for choice in LAYER_CHOICES:
        mine = intervals[intervals["layer_choice"] == choice]
        for name in (*ABLATIONS, "onehot"):
            on = (ONEHOT_KEY if name == "onehot" else config if name == "pretrained"
                  else [*config, "ablation_scope"])
            arm = mine[mine["ablation"] == name] if name != "onehot" else \
                mine[mine["family"] == ONEHOT_FAMILY]
            columns = {"ci_low": f"{name}_{choice}_ci_low", "ci_high": f"{name}_{choice}_ci_high"}
            part = arm.drop_duplicates(on)[[*on, "ci_low", "ci_high"]].rename(columns=columns)
            table = table.merge(part, on=on, how="left")
    return table


def _mixed_data(df: pd.DataFrame) -> pd.DataFrame:
    """Per task: a warning when its rows come from more than one dataset (data fingerprint
    or dataset name): two task=csv files with one name, or an edited file."""
    frame = df.assign(data_fingerprint=df.get("data_fingerprint", "").fillna("").astype(str))
    out = []
    for task, part in frame.groupby("task", sort=False):
        prints = sorted(part["data_fingerprint"].unique())
        sets = sorted(part["dataset"].astype(str).unique()) if "dataset" in part else []
        if len(prints) > 1 or len(sets) > 1:
            out.append({"task": task, "warning": (
                f"mixed datasets: task {task!r} has {len(prints)} data fingerprints "
                f"{prints} ({', '.join(sets)}); each row compares like with like only")})
    return pd.DataFrame(out, columns=["task", "warning"])


def task_warnings(df: pd.DataFrame, selection: dict[str, str]) -> pd.DataFrame:
    """Per task: its warnings (mixed datasets, a small validation set), joined by "; "."""
    parts = pd.concat([_mixed_data(df), pd.DataFrame(list(selection.items()),
                                                     columns=["task", "warning"])])
    if parts.empty:
        return parts
    return parts.groupby("task", sort=False)["warning"].agg("; ".join).reset_index()


def _depth_columns(depth: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The pretrained arm's shallowest equivalent layer and its depth fraction (``depth``)."""
    names = {"shallowest_layer": "pretrained_shallowest_layer",
             "shallowest_rel_depth": "pretrained_shallowest_rel_depth"}
    on = [*GROUP, *COMPARABILITY]
    if depth.empty:
        return table.assign(**{c: np.nan for c in names.values()})
    mine = depth[depth["ablation"] == "pretrained"].drop_duplicates(on)
    return table.merge(mine[[*on, *names]].rename(columns=names), on=on, how="left")


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


VERDICTS = ["class", "transfer", "pretraining", "alignment", "evidence"]
SUMMARY_COLUMNS = [*SUMMARY_KEY, *MODEL_INFO, "metric", "higher_is_better", "classification",
                   "transfer", "pretraining", "alignment", *SCORE_COLUMNS, *CI_COLUMNS,
                   "pretrained_best_rel_depth", "pretrained_shallowest_layer",
                   "pretrained_shallowest_rel_depth", *SEED_COUNT_COLUMNS, "not_comparable",
                   "warning", "evidence"]


def summary_table(df: pd.DataFrame, analysis: Analysis | None = None) -> pd.DataFrame:
    """Per (task, eval_set, model, checkpoint): every arm's seed mean and sd at the last and
    best-validation layer (``panel_scores``), their 95 % intervals (``*_ci_low/high``), the
    taxonomy ``classification`` with its ``evidence``, ``not_comparable`` (why some
    comparison of the row was refused: probe, data fingerprint or precision differ), the
    pretrained arm's shallowest equivalent layer (``depth``) and the task's ``warning``
    (mixed datasets, a validation set too small for a stable selection). Frozen arms only:
    fine-tune cells' numbers are in intervals.csv, their verdicts in comparisons.csv and
    taxonomy.csv (``analysis.finetune_verdicts``)."""
    analysis = analysis if analysis is not None else analyse(df)
    df = frozen_rows(df)  # the paper's summary: frozen arms (fine-tunes: intervals, taxonomy)
    table = panel_scores(main_test_rows(df))
    table = _interval_columns(analysis.intervals, table)
    taxonomy = analysis.taxonomy[[*GROUP, *VERDICTS]].rename(
        columns={"class": "classification"})
    table = _merge(table, taxonomy)
    table = _merge(table, _not_comparable(analysis.comparisons))
    table["not_comparable"] = table["not_comparable"].fillna("")
    table = _depth_columns(analysis.depth, table)
    warnings = task_warnings(df, analysis.warnings)
    table = table.merge(warnings, on="task", how="left") if len(warnings) else \
        table.assign(warning="")
    table["warning"] = table["warning"].fillna("")
    table["higher_is_better"] = table["metric"].map(higher_is_better)
    return table.reindex(columns=SUMMARY_COLUMNS)


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
    if (summary["ablation_scope"] != FULL_SCOPE).any():  # a scope sweep: say which row is which
        out.insert(4, "ablation_scope", summary["ablation_scope"])
    if summary[["head", "precision", "selection"]].drop_duplicates().shape[0] > 1:
        out.insert(4, "probe", summary["head"] + " " + summary["precision"].replace("", "-")
                   + " select=" + summary["selection"])
    for choice in ("best", "last"):
        for name in (*ABLATIONS, "onehot"):
            stem = f"{name}_{choice}"
            out[f"{name} ({choice})"] = [
                cell(*v) for v in zip(summary[stem], summary[f"{stem}_sd"],
                                      summary[f"{stem}_ci_low"], summary[f"{stem}_ci_high"])]
    for column in ("classification", "transfer", "pretraining", "alignment"):
        out[column] = summary[column]
    if summary["warning"].astype(bool).any():
        out["warning"] = summary["warning"]
    out["evidence"] = summary["evidence"]
    return out


def classification_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (task, eval_set, model) at the model's final checkpoint: the class, the three
    verdicts and the evidence (once per group, whatever its scope rows)."""
    final = at_final_checkpoint(summary).drop_duplicates(GROUP)
    columns = [*GROUP, "classification", "transfer", "pretraining", "alignment", "evidence"]
    return final[columns].reset_index(drop=True)


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
    "over seeds and the 95 % interval over test proteins (and over seeds, with their own "
    "degrees of freedom, when an arm has several). Three verdicts at the best layer, each "
    "better / equivalent / worse / unresolved from interval tests against the declared "
    "margin: `transfer` (pretrained vs one-hot), `pretraining` (pretrained vs every "
    "ablation), `alignment` (the final checkpoint against every checkpoint up to "
    "mid-pretraining, else the model against every smaller one of its family: aligned, or "
    "not aligned for an early plateau or a decline). `classification`: aligned / benefits, "
    "not aligned / benefit not from pretraining / no benefit / inconclusive; `evidence` gives "
    "the numbers (docs/statistics.md). Every column, unrounded: summary.csv; intervals.csv, "
    "comparisons.csv, taxonomy.csv, depth.csv (the shallowest layer as good as the best).\n\n")


def write_tables(df: pd.DataFrame, out_dir: str | Path,
                 predictions_root: str | Path | None = None,
                 analysis: Analysis | None = None) -> list[Path]:
    """Write summary.csv, summary.md, repstat.csv, intervals.csv, comparisons.csv,
    taxonomy.csv and depth.csv (unrounded CSVs) into ``out_dir``; predictions are read under
    ``predictions_root`` (default ``out_dir``)."""
    out_dir = Path(out_dir)
    if analysis is None:
        analysis = analyse(df, predictions_root if predictions_root is not None else out_dir)
    summary = summary_table(df, analysis)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ["summary.csv", "summary.md", "repstat.csv", "intervals.csv", "comparisons.csv",
             "taxonomy.csv", "depth.csv"]
    paths = [out_dir / name for name in names]
    summary.to_csv(paths[0], index=False)
    warnings = "".join(f"**Warning**: {w}\n\n"
                       for w in task_warnings(df, analysis.warnings)["warning"])
    paths[1].write_text(SUMMARY_INTRO + warnings + to_markdown(readable_summary(summary)))
    repstat(df).to_csv(paths[2], index=False)
    analysis.intervals.to_csv(paths[3], index=False)
    analysis.comparisons.to_csv(paths[4], index=False)
    analysis.taxonomy.to_csv(paths[5], index=False)
    analysis.depth.to_csv(paths[6], index=False)
    return paths
