"""Summary tables of a results table: per-panel scores, task classification, repstat.

Pure table logic (no plotting). The unit of every table is the *panel* (task, eval_set)
with eval_set a test set (``val`` is only ever used to choose the best layer), read at the
task's main metric (rows with ``main_metric`` True). Two layer choices are reported:

- ``last``: the encoder's last layer (``layer == n_layers - 1``);
- ``best``: the layer chosen on validation (rows flagged ``best_layer``), per seed; the
  seed scores are then averaged, so an ablation's best-layer score is the mean over seeds
  of each seed's own best-validation layer.

Scores over seeds are summarised by mean and sample standard deviation (ddof=1; NaN with
one seed). Metrics in ``LOWER_IS_BETTER`` (mse) are compared with their sign flipped, so a
positive ``gain`` always means "better".
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

log = logging.getLogger(__name__)

LOWER_IS_BETTER = frozenset({"mse"})
ABLATIONS = ("pretrained", "random_init", "stat_transfer")
ONEHOT_FAMILY = "onehot"
LAYER_CHOICES = ("last", "best")
PANEL = ["task", "eval_set"]
CELL = ["model", "checkpoint", "ablation", "seed", "task"]
ROW_KEY = [*CELL, "layer", "eval_set", "metric"]
FINAL_CHECKPOINT = "final"
# Columns describing a (model, checkpoint) that are carried into the tables as is.
MODEL_INFO = ["family", "n_params", "checkpoint_step"]
REQUIRED = [*ROW_KEY, *MODEL_INFO, "n_layers", "rel_depth", "value", "best_layer", "main_metric"]
SCORE_COLUMNS = [f"{name}_{choice}{suffix}" for choice in LAYER_CHOICES[::-1]
                 for name in (*ABLATIONS, "onehot") for suffix in ("", "_sd")]
SEED_COUNT_COLUMNS = [f"{ablation}_n_seeds" for ablation in ABLATIONS]

# "A beats B" (see ``beats``): the improvement must exceed this margin, in metric units for
# bounded metrics (correlations, accuracies: 0.01 = one point) and as a fraction of B's
# value for unbounded lower-is-better metrics (mse: 1 % of B's error), and must also exceed
# the seed standard deviation of A and of B.
DEFAULT_MARGIN = 0.01

PRETRAINING = "benefits from pretraining"
ARCHITECTURE = "benefits from architecture, not pretraining"
NO_BENEFIT = "no benefit"
MIXED = "mixed"
INCOMPLETE = "incomplete"


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def gain(a, b, metric: str):
    """Improvement of ``a`` over ``b`` (positive = ``a`` better), sign-aware for mse."""
    return a - b if higher_is_better(metric) else b - a


# ---------------------------------------------------------------- validation, selection


def _as_bool(frame: pd.DataFrame, column: str) -> pd.Series:
    """A True/False column as bool; CSV round trips may give strings or 0/1."""
    col = frame[column]
    if col.dtype == bool:
        return col
    mapped = col.map(lambda v: {"true": True, "false": False, "1": True, "0": False}.get(
        str(v).strip().lower().removesuffix(".0")))
    bad = mapped.isna()
    if bad.any():
        first = frame.index[bad.to_numpy()][0]
        raise ValueError(
            f"results table: column {column!r} must be True/False, row {first} (0-based, "
            f"header excluded) has {col.loc[first]!r} ({int(bad.sum())} bad rows)")
    return mapped.astype(bool)


def _as_number(frame: pd.DataFrame, column: str) -> pd.Series:
    """A numeric column; text that is not a number is an error naming the row (NaN stays)."""
    numbers = pd.to_numeric(frame[column], errors="coerce")
    bad = numbers.isna() & frame[column].notna()
    if bad.any():
        first = frame.index[bad.to_numpy()][0]
        raise ValueError(f"results table row {first} (0-based, header excluded): column "
                         f"{column!r} is not a number: {frame.at[first, column]!r}")
    return numbers


def _check_unique(rows: pd.DataFrame) -> None:
    dup = rows.duplicated(ROW_KEY, keep=False)
    if dup.any():
        first = rows.loc[dup, ROW_KEY].iloc[0].to_dict()
        raise ValueError(
            f"results table: {int(dup.sum())} rows repeat a (model, checkpoint, ablation, seed, "
            f"task, layer, eval_set, metric) key, e.g. {first}; was a run collected twice?")


def _check_main_metric(rows: pd.DataFrame) -> None:
    per_task = rows.groupby("task")["metric"].unique()
    several = {task: list(m) for task, m in per_task.items() if len(m) > 1}
    if several:
        raise ValueError(f"results table: tasks with more than one main metric: {several}")


def main_test_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Validated main-metric rows on test sets (eval_set != "val").

    Raises ValueError naming the missing column, the bad row or the repeated key. Rows
    whose value is not finite are dropped and counted in the log.
    """
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"not a ptransfer results table, missing columns {missing}")
    frame = df.copy()
    for column in ("best_layer", "main_metric"):
        frame[column] = _as_bool(frame, column)
    for column in ("value", "layer", "n_layers", "rel_depth", "n_params", "checkpoint_step"):
        frame[column] = _as_number(frame, column)
    out_of_range = ~((frame["layer"] >= 0) & (frame["layer"] < frame["n_layers"]))
    if out_of_range.any():
        first = frame.index[out_of_range.to_numpy()][0]
        raise ValueError(
            f"results table row {first} (0-based, header excluded): layer "
            f"{frame.at[first, 'layer']} outside 0..n_layers-1 "
            f"(n_layers={frame.at[first, 'n_layers']})")
    rows = frame[frame["main_metric"] & (frame["eval_set"].astype(str) != "val")]
    if rows.empty:
        raise ValueError("results table has no main-metric rows on a test set (eval_set != val)")
    _check_unique(rows)
    _check_main_metric(rows)
    finite = np.isfinite(rows["value"])
    if not finite.all():
        log.warning("dropped %d main-metric test rows whose value is not finite",
                    int((~finite).sum()))
    return rows[finite].reset_index(drop=True)


def seed_scores(rows: pd.DataFrame, choice: Literal["last", "best"]) -> pd.DataFrame:
    """One score per (task, eval_set, model, checkpoint, ablation, seed) at a layer choice.

    ``rows`` are ``main_test_rows``. Returns those rows restricted to the chosen layer (one
    per seed). A cell without a row at that layer is dropped and counted in the log; a cell
    with two flagged best layers is an error naming it.
    """
    if choice == "last":
        picked = rows[rows["layer"] == rows["n_layers"] - 1]
    elif choice == "best":
        picked = rows[rows["best_layer"]]
    else:
        raise ValueError(f"layer choice must be one of {LAYER_CHOICES}, got {choice!r}")
    keys = [*CELL, "eval_set"]
    several = picked.duplicated(keys, keep=False)
    if several.any():
        cell = picked.loc[several, keys].iloc[0].to_dict()
        raise ValueError(f"results table: several {choice} layers flagged for cell {cell}")
    n_cells = len(rows.drop_duplicates(keys))
    if len(picked) < n_cells:
        log.warning("%d of %d cells have no %s-layer row and are left out of the summary",
                    n_cells - len(picked), n_cells, choice)
    return picked.reset_index(drop=True)


def seed_stats(scores: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, sample sd (ddof=1) and count of seeds per group of ``keys``."""
    grouped = scores.groupby(keys, sort=False, dropna=False)["value"]
    return grouped.agg(mean="mean", sd="std", n_seeds="count").reset_index()


def final_checkpoint_of(frame: pd.DataFrame) -> dict[str, str]:
    """Model -> the checkpoint taken as its final one.

    ``final`` when present, otherwise the checkpoint with the largest ``checkpoint_step``
    (checkpoints without a step come last, then by name).
    """
    ranked = frame.drop_duplicates(["model", "checkpoint"]).assign(
        is_final=lambda f: f["checkpoint"].astype(str) == FINAL_CHECKPOINT)
    ranked = ranked.sort_values(["is_final", "checkpoint_step", "checkpoint"],
                                na_position="first")
    return ranked.groupby("model", sort=False)["checkpoint"].last().to_dict()


def at_final_checkpoint(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of each model's final checkpoint (see ``final_checkpoint_of``)."""
    final = final_checkpoint_of(frame)
    return frame[frame["checkpoint"] == frame["model"].map(final)]


# ---------------------------------------------------------------- scores in wide form


def _onehot_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """Per panel: onehot_{last,best} (+ _sd) over seeds; empty frame when there is no onehot."""
    onehot = rows[rows["family"] == ONEHOT_FAMILY]
    models = onehot["model"].unique()
    if len(models) > 1:
        raise ValueError(f"results table: several one-hot baselines {list(models)}; keep one")
    out = pd.DataFrame(columns=PANEL)
    for choice in LAYER_CHOICES:
        agg = seed_stats(seed_scores(onehot, choice), PANEL).rename(
            columns={"mean": f"onehot_{choice}", "sd": f"onehot_{choice}_sd"})
        out = out.merge(agg.drop(columns="n_seeds"), on=PANEL, how="outer")
    return out


def panel_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (task, eval_set, model, checkpoint) of the encoders: every ablation's seed mean
    and sd at both layer choices, plus the one-hot baseline of the panel.

    Columns: task, eval_set, model, checkpoint, metric, family, n_params, checkpoint_step,
    ``SCORE_COLUMNS`` (``{ablation|onehot}_{best|last}`` and ``..._sd``),
    ``pretrained_best_rel_depth``, ``SEED_COUNT_COLUMNS``. Missing combinations are NaN.
    """
    encoders = rows[rows["family"] != ONEHOT_FAMILY]
    unknown = ~encoders["ablation"].isin(ABLATIONS)
    if unknown.any():
        log.warning("left out %d rows of unknown ablations %s (known: %s)", int(unknown.sum()),
                    sorted(encoders.loc[unknown, "ablation"].unique()), list(ABLATIONS))
    keys = [*PANEL, "model", "checkpoint"]
    info = encoders.groupby(keys, sort=False)[["metric", *MODEL_INFO]].first().reset_index()
    for choice in LAYER_CHOICES:
        scores = seed_scores(encoders, choice)
        agg = seed_stats(scores, [*keys, "ablation"])
        for ablation, part in agg.groupby("ablation", sort=False):
            names = {"mean": f"{ablation}_{choice}", "sd": f"{ablation}_{choice}_sd"}
            if choice == "best":
                names["n_seeds"] = f"{ablation}_n_seeds"
            part = part.rename(columns=names)[[*keys, *names.values()]]
            info = info.merge(part, on=keys, how="left")
    best_pretrained = seed_scores(encoders[encoders["ablation"] == "pretrained"], "best")
    depth = best_pretrained.groupby(keys, sort=False)["rel_depth"].mean()
    info = info.merge(depth.rename("pretrained_best_rel_depth").reset_index(), on=keys,
                      how="left")
    info = info.merge(_onehot_columns(rows), on=PANEL, how="left")
    info = info.reindex(columns=[*keys, "metric", *MODEL_INFO, *SCORE_COLUMNS,
                                 "pretrained_best_rel_depth", *SEED_COUNT_COLUMNS])
    return info.astype({c: "Int64" for c in SEED_COUNT_COLUMNS})  # NaN-able counts


# ---------------------------------------------------------------- classification


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


# ---------------------------------------------------------------- repstat


def one_sided_p(ablation_values: np.ndarray, pretrained: float, metric: str) -> float:
    """p-value of H1 "pretrained is better than the ablation's seed distribution".

    One-sample t-test of the ablation's seed scores (n) against ``pretrained``
    (scipy.stats.ttest_1samp, alternative "less" when higher is better, "greater" for mse).
    NaN with fewer than 2 finite seed scores; with zero seed variance scipy's limit is
    returned (0 or 1, NaN when the scores equal ``pretrained``).
    """
    values = np.asarray(ablation_values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2 or not np.isfinite(pretrained):
        return float("nan")
    alternative = "less" if higher_is_better(metric) else "greater"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: scipy's limit is fine
        return float(stats.ttest_1samp(values, pretrained, alternative=alternative).pvalue)


def _repstat_choice(scores: pd.DataFrame, table: pd.DataFrame, choice: str) -> pd.DataFrame:
    """Columns ``{choice}_*`` of repstat for one layer choice, aligned with ``table``."""
    keys = [*PANEL, "model", "checkpoint"]
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
                    "metric", *SEED_COUNT_COLUMNS]]]
    for choice in LAYER_CHOICES:
        parts.append(_repstat_choice(seed_scores(encoders, choice), table, choice))
    return pd.concat(parts, axis=1)


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
