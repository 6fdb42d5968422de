"""Per-panel scores of a results table: the building block of summary, taxonomy and repstat.

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
from typing import Literal

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

LOWER_IS_BETTER = frozenset({"mse"})
ABLATIONS = ("pretrained", "random_init", "stat_transfer")
ONEHOT_FAMILY = "onehot"
LAYER_CHOICES = ("last", "best")
PANEL = ["task", "eval_set"]
GROUP = [*PANEL, "model", "checkpoint"]
FULL_SCOPE = "full"
CELL = ["model", "checkpoint", "ablation", "ablation_scope", "seed", "task"]
# What must be equal for two cells to be compared (docs/statistics.md, "Units"): the probe
# and its own configuration, the data, and how features were extracted and stored.
COMPARABILITY = ("head", "head_config", "data_fingerprint", "precision", "length_policy",
                 "pooled_dtype", "revision", "selection")
# How the layer and hyper-parameters were chosen (selection.method): on the validation set,
# or by k-fold cross-validation over train and validation. Rows written before the column: val.
SELECTIONS = ("val", "cv")
# Extraction settings mean nothing for one-hot features: one-hot compares across them.
NOT_FOR_ONEHOT = ("precision", "length_policy", "pooled_dtype", "revision")
ROW_KEY = [*CELL, *COMPARABILITY, "layer", "eval_set", "metric"]
FINAL_CHECKPOINT = "final"
# Columns describing a (model, checkpoint) that are carried into the tables as is.
MODEL_INFO = ["family", "n_params", "checkpoint_step"]
CHECKPOINT_INFO = ["checkpoint_step", "checkpoint_fraction", "checkpoint_order"]
REQUIRED = ["model", "checkpoint", "ablation", "seed", "task", "layer", "eval_set", "metric",
            *MODEL_INFO, "n_layers", "rel_depth", "value", "best_layer", "main_metric"]
SUMMARY_KEY = [*GROUP, "ablation_scope", *COMPARABILITY]
SCORE_COLUMNS = [f"{name}_{choice}{suffix}" for choice in LAYER_CHOICES[::-1]
                 for name in (*ABLATIONS, "onehot") for suffix in ("", "_sd")]
SEED_COUNT_COLUMNS = [f"{ablation}_n_seeds" for ablation in ABLATIONS]


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
        shown = {k: first[k] for k in [*CELL, "layer", "eval_set", "metric"]}
        raise ValueError(
            f"results table: {int(dup.sum())} rows repeat the key of one result (cell, "
            f"probe, data, extraction, layer, eval set, metric), e.g. {shown}; "
            f"{_collision_cause(rows, first)}")


def _collision_cause(rows: pd.DataFrame, key: dict) -> str:
    """Which cells wrote the rows of one repeated key, and what that usually means."""
    same = (rows[list(key)].astype(str) == pd.Series(key).astype(str)).all(axis=1)
    cells = sorted(rows.loc[same, "cell_id"].astype(str).unique()) if "cell_id" in rows else []
    if len(cells) > 1:
        return (f"written by the cells {cells}, whose configs differ in something the rows "
                "do not show (a model config such as its weights file or max_len changed "
                "between runs, or two task=csv files share a name): keep them in separate "
                "results folders, or remove the stale cells")
    return f"every copy comes from cell {cells}: was a run collected twice?"


def _check_main_metric(rows: pd.DataFrame) -> None:
    per_task = rows.groupby("task")["metric"].unique()
    several = {task: list(m) for task, m in per_task.items() if len(m) > 1}
    if several:
        raise ValueError(f"results table: tasks with more than one main metric: {several}")


def _with_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Older tables lack some columns: an absent setting is one value ("", scope full)."""
    for column in (*COMPARABILITY, "ablation_scope", "cell_id"):
        if column not in frame.columns:
            frame[column] = ""
        frame[column] = frame[column].fillna("").astype(str)
    for column in CHECKPOINT_INFO:
        if column not in frame.columns:
            frame[column] = np.nan
        frame[column] = _as_number(frame, column)
    frame.loc[frame["ablation_scope"] == "", "ablation_scope"] = FULL_SCOPE
    frame.loc[frame["selection"] == "", "selection"] = SELECTIONS[0]
    return frame


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Settings that do not apply are made equal, and the cells that then coincide kept once.

    The ablation scope does not apply to pretrained or one-hot cells, nor extraction settings
    to one-hot: a scope sweep runs pretrained and one-hot once per scope (same numbers), and
    a one-hot cell at another precision is the same baseline. Of cells that coincide (same
    normalised identity and seed) the first by cell id is kept; the log names the others.
    """
    unscoped = (frame["ablation"] == "pretrained") | (frame["family"] == ONEHOT_FAMILY)
    frame.loc[unscoped, "ablation_scope"] = FULL_SCOPE
    for column in NOT_FOR_ONEHOT:
        frame.loc[frame["family"] == ONEHOT_FAMILY, column] = ""
    identity = [*CELL, *COMPARABILITY]
    cells = frame.drop_duplicates("cell_id")[[*identity, "cell_id"]].sort_values("cell_id")
    extra = cells[cells.duplicated(identity, keep="first")]["cell_id"]
    if len(extra):
        log.info("%d cells repeat another's computation once scope / one-hot precision are set "
                 "aside, and are read once: %s", len(extra), sorted(extra)[:5])
        frame = frame[~frame["cell_id"].isin(set(extra))]
    return frame


def main_test_rows(df: pd.DataFrame, validation: bool = False) -> pd.DataFrame:
    """Validated, normalised main-metric rows on test sets (eval_set != "val"); with
    ``validation``, the validation rows instead (empty when there are none).

    Raises ValueError naming the missing column, the bad row or the repeated key. Rows whose
    value is not finite are kept (NaN): a seed whose metric is undefined is reported as such
    downstream, never dropped silently.
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
    frame = _with_defaults(frame)
    rows = frame[frame["main_metric"] & ((frame["eval_set"].astype(str) == "val") == validation)]
    if rows.empty and not validation:
        raise ValueError("results table has no main-metric rows on a test set (eval_set != val)")
    _check_unique(rows)
    _check_main_metric(rows)
    undefined = ~np.isfinite(rows["value"])
    if undefined.any() and not validation:
        log.warning("%d main-metric test rows have an undefined value (NaN): reported as "
                    "undefined seeds", int(undefined.sum()))
    return _normalise(rows).reset_index(drop=True)


def seed_scores(rows: pd.DataFrame, choice: Literal["last", "best"]) -> pd.DataFrame:
    """One row per (cell, eval_set) at a layer choice: ``main_test_rows`` restricted to
    the chosen layer. A cell without a row at that layer (no best layer: every validation
    score NaN) is left out and counted in the log; two flagged best layers are an error."""
    if choice == "last":
        picked = rows[rows["layer"] == rows["n_layers"] - 1]
    elif choice == "best":
        picked = rows[rows["best_layer"]]
    else:
        raise ValueError(f"layer choice must be one of {LAYER_CHOICES}, got {choice!r}")
    keys = ["cell_id", "eval_set"]
    several = picked.duplicated(keys, keep=False)
    if several.any():
        cell = picked.loc[several, [*CELL, "eval_set"]].iloc[0].to_dict()
        raise ValueError(f"results table: several {choice} layers flagged for cell {cell}")
    n_cells = len(rows.drop_duplicates(keys))
    if len(picked) < n_cells:
        log.warning("%d of %d cells have no %s-layer row and are left out of the summary",
                    n_cells - len(picked), n_cells, choice)
    return picked.reset_index(drop=True)


def seed_stats(scores: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, sample sd (ddof=1) and count of the defined seed scores per group of ``keys``."""
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

# A one-hot baseline matches an encoder arm on everything comparable except the extraction
# settings (probe, its config, data, selection): never pooled across selections.
ONEHOT_MATCH = [key for key in COMPARABILITY if key not in NOT_FOR_ONEHOT]


def _onehot_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """Per panel and probe: onehot_{last,best} (+ _sd) over seeds."""
    onehot = rows[rows["family"] == ONEHOT_FAMILY]
    models = onehot["model"].unique()
    if len(models) > 1:
        raise ValueError(f"results table: several one-hot baselines {list(models)}; keep one")
    keys = [*PANEL, *ONEHOT_MATCH]
    out = pd.DataFrame(columns=keys)
    for choice in LAYER_CHOICES:
        agg = seed_stats(seed_scores(onehot, choice), keys).rename(
            columns={"mean": f"onehot_{choice}", "sd": f"onehot_{choice}_sd"})
        out = out.merge(agg.drop(columns="n_seeds"), on=keys, how="outer")
    return out


def _summary_rows(encoders: pd.DataFrame) -> pd.DataFrame:
    """The rows of the summary: each (group, configuration) once per ablation scope of its
    ablation arms (scope ``full`` when it has none); pretrained is shown on each."""
    config = [*GROUP, *COMPARABILITY]
    ablated = encoders[encoders["ablation"] != "pretrained"]
    scoped = ablated[[*config, "ablation_scope"]].drop_duplicates()
    plain = encoders[[*config]].drop_duplicates().merge(
        scoped[config].drop_duplicates(), how="left", indicator=True)
    plain = plain[plain["_merge"] == "left_only"].drop(columns="_merge")
    return pd.concat([scoped, plain.assign(ablation_scope=FULL_SCOPE)], ignore_index=True)


def panel_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (task, eval_set, model, checkpoint, ablation scope, configuration) of the encoders:
    every ablation's seed mean and sd at both layer choices, plus the one-hot baseline of the
    panel under the same probe and data.

    Columns: ``SUMMARY_KEY``, metric, family, n_params, checkpoint_step, ``SCORE_COLUMNS``
    (``{ablation|onehot}_{best|last}`` and ``..._sd``), ``pretrained_best_rel_depth``,
    ``SEED_COUNT_COLUMNS``. Missing combinations are NaN; a configuration (probe, data,
    extraction) is never pooled with another.
    """
    encoders = rows[rows["family"] != ONEHOT_FAMILY]
    unknown = ~encoders["ablation"].isin(ABLATIONS)
    if unknown.any():
        log.warning("left out %d rows of unknown ablations %s (known: %s)", int(unknown.sum()),
                    sorted(encoders.loc[unknown, "ablation"].unique()), list(ABLATIONS))
    config = [*GROUP, *COMPARABILITY]
    info = encoders.groupby(config, sort=False)[["metric", *MODEL_INFO]].first().reset_index()
    info = _summary_rows(encoders).merge(info, on=config, how="left")
    for choice in LAYER_CHOICES:
        agg = seed_stats(seed_scores(encoders, choice), [*config, "ablation_scope", "ablation"])
        for ablation, part in agg.groupby("ablation", sort=False):
            names = {"mean": f"{ablation}_{choice}", "sd": f"{ablation}_{choice}_sd"}
            if choice == "best":
                names["n_seeds"] = f"{ablation}_n_seeds"
            on = config if ablation == "pretrained" else [*config, "ablation_scope"]
            info = info.merge(part.rename(columns=names)[[*on, *names.values()]], on=on,
                              how="left")
    best_pretrained = seed_scores(encoders[encoders["ablation"] == "pretrained"], "best")
    depth = best_pretrained.groupby(config, sort=False)["rel_depth"].mean()
    info = info.merge(depth.rename("pretrained_best_rel_depth").reset_index(), on=config,
                      how="left")
    onehot = _onehot_columns(rows)
    info = info.merge(onehot, on=[*PANEL, *ONEHOT_MATCH], how="left") if len(onehot) else info
    info = info.reindex(columns=[*SUMMARY_KEY, "metric", *MODEL_INFO, *SCORE_COLUMNS,
                                 "pretrained_best_rel_depth", *SEED_COUNT_COLUMNS])
    return info.astype({c: "Int64" for c in SEED_COUNT_COLUMNS})  # NaN-able counts
