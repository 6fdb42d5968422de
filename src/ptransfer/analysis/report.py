"""``ptransfer report``: figures, summary tables and a self-contained index.html.

Input is only a merged results table (``results.COLUMNS``). Output, in ``out_dir``:

- ``depth_<task>_<eval_set>.{png,svg}``: main test metric vs relative depth, per panel;
- ``scaling_<task>_<eval_set>.{png,svg}``: best-validation-layer metric vs parameter count,
  only for panels where some family has >= 2 model sizes;
- ``checkpoints_<task>_<eval_set>.{png,svg}``: best-validation-layer metric vs pretraining
  step, only for panels where some model has >= 2 checkpoints with a known step;
- ``summary.csv``, ``summary.md``, ``repstat.csv``, ``intervals.csv``, ``comparisons.csv``,
  ``taxonomy.csv``, ``depth.csv`` (see ``summary.write_tables``; predictions are read
  beside the results file, as ``collect`` leaves them);
- ``index.html``: every figure with its caption, the classes with their evidence and the
  summary table, with no network resources.

Depth and scaling figures use each model's final checkpoint (``panels.final_checkpoint_of``),
and frozen cells only (a fine-tune cell has one layer: its numbers are in intervals.csv, its
verdicts in taxonomy.csv).
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ptransfer.analysis import plots
from ptransfer.analysis.bootstrap import find_predictions
from ptransfer.analysis.finetune_verdicts import frozen_rows
from ptransfer.analysis.layer_bands import band_layers, layer_intervals
from ptransfer.analysis.margins import DEFAULT_MARGINS
from ptransfer.analysis.panels import (
    ONEHOT_FAMILY,
    PANEL,
    at_final_checkpoint,
    main_test_rows,
    seed_scores,
    seed_stats,
)
from ptransfer.analysis.rows import read_results
from ptransfer.analysis.selection import decision_rows
from ptransfer.analysis.summary import (
    analyse,
    classification_table,
    readable_summary,
    summary_table,
    write_tables,
)

log = logging.getLogger(__name__)

INDEX_FILE = "index.html"
LINE_KEY = ("colour = model; solid = pretrained, dashed = random init, dotted = statistics "
            "transfer")
BEST_KEY = "star: the layer chosen on validation (most common over seeds)"
SHALLOW_KEY = ("diamond: the shallowest layer as good as the best (equivalent within the "
               "margin on validation; depth.csv)")


@dataclass
class FigureEntry:
    """One written figure and the caption index.html shows under it."""

    png: Path
    svg: Path
    caption: str


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def _load(results_csv: Path) -> pd.DataFrame:
    """The results table, or a ValueError/FileNotFoundError that names the file."""
    try:
        frame = read_results(results_csv)
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{results_csv}: empty file, not a ptransfer results table") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{results_csv}: not a readable CSV results table ({err})") from err
    if frame.empty:
        raise ValueError(f"{results_csv}: results table has a header but no rows")
    return frame


def _encoders(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["family"] != ONEHOT_FAMILY]


def _onehot_by_panel(rows: pd.DataFrame, intervals: pd.DataFrame) -> dict[tuple, plots.Reference]:
    """(task, eval_set) -> the one-hot reference line: mean over seeds, with ±1 sd over two
    or more seeds, else the 95 % interval over test proteins of ``intervals`` (the one-hot
    arm's, when the panel has exactly one); empty when there is no one-hot."""
    onehot = rows[rows["family"] == ONEHOT_FAMILY]
    if onehot.empty:
        return {}
    stats = seed_stats(seed_scores(onehot, "best"), PANEL)
    intervals = decision_rows(intervals)  # the one-hot cell of the decisions' selection
    arms = intervals[(intervals["family"] == ONEHOT_FAMILY)
                     & (intervals["layer_choice"] == "best")] if len(intervals) else intervals
    out = {}
    for r in stats.itertuples(index=False):
        if r.n_seeds > 1:
            out[(r.task, r.eval_set)] = plots.Reference(r.mean, r.mean - r.sd, r.mean + r.sd, "sd")
            continue
        arm = arms[(arms["task"] == r.task) & (arms["eval_set"] == r.eval_set)] \
            if len(arms) else arms
        low, high = (arm.iloc[0]["ci_low"], arm.iloc[0]["ci_high"]) if len(arm) == 1 else \
            (np.nan, np.nan)
        out[(r.task, r.eval_set)] = plots.Reference(r.mean, low, high, "ci")
    return out


def _layer_curves(encoders: pd.DataFrame) -> pd.DataFrame:
    """Per (task, eval_set, model, ablation, layer): mean, sd over seeds and rel_depth."""
    keys = [*PANEL, "model", "ablation", "layer"]
    curves = seed_stats(encoders, keys)
    depth = encoders.groupby(keys, sort=False, dropna=False)["rel_depth"].mean()
    return curves.merge(depth.reset_index(), on=keys, how="left")


def _bootstrap_bands(panel: pd.DataFrame, final: pd.DataFrame, metric: str,
                     files: dict[str, Path]) -> pd.DataFrame:
    """``panel`` (one task and test set) with ``band_low``/``band_high``/``band`` = "ci" on
    each one-seed curve whose cell has predictions: its per-layer 95 % bootstrap interval."""
    panel = panel.assign(band_low=float("nan"), band_high=float("nan"), band="")
    eval_set = panel["eval_set"].iloc[0]
    for (model, ablation), line in panel.groupby(["model", "ablation"], sort=False):
        cells = final[(final["model"] == model) & (final["ablation"] == ablation)
                      & (final["eval_set"] == eval_set) & (final["task"] == line["task"].iloc[0])]
        ids = cells["cell_id"].astype(str).unique()
        if line["n_seeds"].max() != 1 or len(ids) != 1 or ids[0] not in files:
            continue  # >= 2 seeds: the sd band; no predictions: no band (the caption says)
        layers = band_layers(int(cells["n_layers"].iloc[0]), int(cells["n_eval"].max()))
        found = layer_intervals(files[ids[0]], eval_set, metric, layers)
        where = line.index[line["layer"].isin(found["layer"])]
        ci = found.set_index("layer").loc[panel.loc[where, "layer"]]
        panel.loc[where, ["band_low", "band_high", "band"]] = list(zip(
            ci["ci_low"], ci["ci_high"], ["ci"] * len(ci)))
    return panel


def _shallow_points(depth: pd.DataFrame) -> pd.DataFrame:
    """Per (task, eval_set, model, ablation) at the final checkpoint: the shallowest layer
    as good as the best (``depth``), its rel_depth and test score (the diamond)."""
    keys = [*PANEL, "model", "ablation"]
    if depth.empty or depth["shallowest_layer"].isna().all():
        return pd.DataFrame(columns=[*keys, "rel_depth", "mean"])
    found = at_final_checkpoint(depth.dropna(subset=["shallowest_layer"]))
    found = found.drop_duplicates(keys).rename(columns={"shallowest_rel_depth": "rel_depth",
                                                        "estimate": "mean"})
    return found[[*keys, "rel_depth", "mean"]]


def _depth_figures(rows: pd.DataFrame, out_dir: Path, colours: dict[str, str],
                   onehot: dict[tuple, plots.Reference],
                   root: Path | None = None, depth: pd.DataFrame | None = None
                   ) -> list[FigureEntry]:
    final = at_final_checkpoint(_encoders(rows))
    checkpoints = ", ".join(sorted(final["checkpoint"].astype(str).unique()))
    files = find_predictions(root)
    entries = []
    best = _best_points(final)
    shallow = _shallow_points(depth if depth is not None else pd.DataFrame())
    for (task, eval_set), panel in _layer_curves(final).groupby(PANEL, sort=False):
        metric = rows.loc[rows["task"] == task, "metric"].iloc[0]
        here = (final["task"] == task) & (final["eval_set"] == eval_set)
        marks = best[(best["task"] == task) & (best["eval_set"] == eval_set)]
        diamonds = shallow[(shallow["task"] == task) & (shallow["eval_set"] == eval_set)]
        panel = _bootstrap_bands(panel, final[here], metric, files)
        fig = plots.depth_figure(panel, onehot.get((task, eval_set)), colours, metric,
                                 f"{task} — {eval_set}: probe on every layer", best=marks,
                                 shallow=diamonds)
        caption = (f"{task}, test set {eval_set}: test {metric} of a probe fitted on each "
                   f"layer, against relative depth (checkpoint {checkpoints}); {LINE_KEY}; "
                   f"{BEST_KEY}; " + (f"{SHALLOW_KEY}; " if len(diamonds) else "")
                   + f"{_band_note(final[here], panel)}"
                   + _onehot_note(task, eval_set, onehot) + ".")
        entries.append(FigureEntry(*plots.save(fig, out_dir, f"depth_{_slug(task)}_"
                                                             f"{_slug(eval_set)}"), caption))
    return entries


def _best_points(encoders: pd.DataFrame) -> pd.DataFrame:
    """Per (task, eval_set, model, ablation): the most common best-validation layer over
    seeds, its rel_depth and the seed-mean score there (the star of the depth figure)."""
    keys = [*PANEL, "model", "ablation"]
    flagged = encoders[encoders["best_layer"]]
    if flagged.empty:
        return pd.DataFrame(columns=[*keys, "layer", "rel_depth", "mean"])
    layer = flagged.groupby(keys, sort=False)["layer"].agg(lambda s: s.mode().iloc[0])
    picked = encoders.merge(layer.reset_index(), on=[*keys, "layer"])
    return picked.groupby([*keys, "layer"], sort=False).agg(
        rel_depth=("rel_depth", "mean"), mean=("value", "mean")).reset_index()


def _band_note(rows: pd.DataFrame, panel: pd.DataFrame | None = None) -> str:
    """How many seeds each line is made of, and what its band is: ±1 sd over seeds with two
    or more; with one, the 95 % bootstrap interval over test proteins where ``panel`` has
    it (depth figures), else none."""
    seeds = rows.groupby("ablation", sort=False)["seed"].nunique()
    with_ci = set() if panel is None else set(panel.loc[panel["band"] == "ci", "ablation"])
    parts = []
    for ablation, n in seeds.items():
        band = ("±1 sd over seeds" if n > 1 else "95 % bootstrap interval over test proteins"
                if ablation in with_ci else "no band")
        parts.append(f"{ablation} {n} seed{'s' if n > 1 else ''} ({band})")
    return "lines: mean over seeds; shaded bands: " + ", ".join(parts)


def _onehot_note(task: str, eval_set: str, onehot: dict) -> str:
    reference = onehot.get((task, eval_set))
    if reference is None:
        return ""
    band = {"sd": "±1 sd over seeds", "ci": "95 % bootstrap interval over test proteins"}
    shaded = f" (grey band: {band[reference.band]})" if reference.has_band else " (no band)"
    return f"; grey line: one-hot baseline{shaded}"


def _interval_bands(points: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """``points`` (one per panel, model and ablation) with the 95 % interval over test
    proteins as the band of one-seed arms (``band`` "ci"), from ``intervals.csv``'s
    best-layer arm at the final checkpoint, where that arm is one; others as they were."""
    keys = [*PANEL, "model", "ablation"]
    if not len(intervals):
        return points
    arms = at_final_checkpoint(decision_rows(intervals))
    arms = arms[(arms["layer_choice"] == "best") & (arms["n_seeds"] == 1)]
    arms = arms.drop_duplicates(keys, keep=False)[[*keys, "ci_low", "ci_high"]]
    out = points.merge(arms, on=keys, how="left")
    one_seed = ~np.isfinite(out["sd"].astype(float)) & out["ci_low"].notna()
    out.loc[one_seed, "band_low"] = out.loc[one_seed, "ci_low"]
    out.loc[one_seed, "band_high"] = out.loc[one_seed, "ci_high"]
    out.loc[one_seed, "band"] = "ci"
    return out.drop(columns=["ci_low", "ci_high"])


def _scaling_figures(rows: pd.DataFrame, out_dir: Path, onehot: dict,
                     intervals: pd.DataFrame) -> list[FigureEntry]:
    best = seed_scores(at_final_checkpoint(_encoders(rows)), "best")
    points = seed_stats(best, [*PANEL, "family", "model", "n_params", "ablation"])
    points = _interval_bands(points.assign(band_low=np.nan, band_high=np.nan, band=""),
                             intervals)
    colours = plots.colour_map(list(dict.fromkeys(
        points.sort_values(["family", "n_params"])["family"])))
    entries = []
    for (task, eval_set), panel in points.groupby(PANEL, sort=False):
        if panel.groupby("family")["n_params"].nunique().max() < 2:
            continue  # one size per family: nothing to scale
        metric = rows.loc[rows["task"] == task, "metric"].iloc[0]
        fig = plots.scaling_figure(panel, onehot.get((task, eval_set)), colours, metric,
                                   f"{task} — {eval_set}: model size")
        caption = (f"{task}, test set {eval_set}: test {metric} at the layer chosen on "
                   f"validation against encoder parameter count (log scale), final "
                   f"checkpoints; colour = model family; line style = ablation; "
                   f"{_band_note(best[(best.task == task) & (best.eval_set == eval_set)], panel)}"
                   + _onehot_note(task, eval_set, onehot) + ".")
        stem = f"scaling_{_slug(task)}_{_slug(eval_set)}"
        entries.append(FigureEntry(*plots.save(fig, out_dir, stem), caption))
    return entries


def _checkpoint_figures(rows: pd.DataFrame, out_dir: Path, colours: dict[str, str],
                        onehot: dict) -> list[FigureEntry]:
    stepped = _encoders(rows).dropna(subset=["checkpoint_step"])
    points = seed_stats(seed_scores(stepped, "best"),
                        [*PANEL, "model", "checkpoint_step", "ablation"])
    entries = []
    for (task, eval_set), panel in points.groupby(PANEL, sort=False):
        n_steps = panel.groupby("model")["checkpoint_step"].nunique()
        panel = panel[panel["model"].isin(n_steps[n_steps >= 2].index)]
        if panel.empty:
            continue  # no model with two pretraining checkpoints here
        metric = rows.loc[rows["task"] == task, "metric"].iloc[0]
        fig = plots.checkpoint_figure(panel, onehot.get((task, eval_set)), colours, metric,
                                      f"{task} — {eval_set}: pretraining checkpoints")
        caption = (f"{task}, test set {eval_set}: test {metric} at the layer chosen on "
                   f"validation against the pretraining step of the checkpoint (models with "
                   f">= 2 checkpoints of known step); {LINE_KEY}; "
                   f"{_band_note(stepped[(stepped.task == task) & (stepped.eval_set == eval_set)])}"
                   + _onehot_note(task, eval_set, onehot) + ".")
        stem = f"checkpoints_{_slug(task)}_{_slug(eval_set)}"
        entries.append(FigureEntry(*plots.save(fig, out_dir, stem), caption))
    return entries


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3f}",
                         border=0, classes="table")


def write_index(out_dir: Path, source: str, figures: list[FigureEntry],
                summary: pd.DataFrame, margins: dict | None = None) -> Path:
    """index.html: classes with their evidence, figures (relative PNG paths), summary table."""
    classes = classification_table(summary)
    margins = margins if margins is not None else DEFAULT_MARGINS
    margin_text = ", ".join(f"{m} {v:g}" for m, v in margins.items() if v is not None)
    figure_html = "\n".join(
        f'<figure><img src="{html.escape(f.png.name)}" alt="{html.escape(f.caption)}">'
        f"<figcaption>{html.escape(f.caption)} "
        f'(<a href="{html.escape(f.svg.name)}">SVG</a>)</figcaption></figure>'
        for f in figures)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ptransfer report</title>
<style>
body {{ font-family: sans-serif; max-width: 75em; margin: 1em auto; padding: 0 1em; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 0.9em; color: #333; }}
table {{ border-collapse: collapse; font-size: 0.8em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
</style>
</head>
<body>
<h1>ptransfer report</h1>
<p>Source: {html.escape(source)}. Scores are the task's main metric on test sets
(the validation set only chooses hyper-parameters and the best layer).
Tables: <a href="summary.csv">summary.csv</a>, <a href="summary.md">summary.md</a>,
<a href="repstat.csv">repstat.csv</a>, <a href="intervals.csv">intervals.csv</a>,
<a href="comparisons.csv">comparisons.csv</a>, <a href="taxonomy.csv">taxonomy.csv</a>,
<a href="depth.csv">depth.csv</a>.</p>
<h2>Classification</h2>
<p>Per panel and model (final checkpoint), at the best-validation layer, three verdicts, each
better / equivalent / worse / unresolved from paired interval tests over test proteins (and
seeds, with their own degrees of freedom) against the declared margin
({html.escape(margin_text)}): <b>transfer</b>, pretrained vs one-hot; <b>pretraining</b>,
pretrained vs every ablation (random init, stat transfer); <b>alignment</b>, whether the late
part of pretraining still improves (the final checkpoint against every checkpoint up to
mid-pretraining; else the model against every smaller model of its family): aligned, or not
aligned for an early plateau or a decline. Class: aligned (transfer and pretraining better,
aligned) / benefits, not aligned (transfer and pretraining better, not aligned) / benefit not
from pretraining (transfer better, pretraining equivalent or worse: the architecture or the
weights' statistics explain it) / no benefit (transfer equivalent or worse) / inconclusive
(what is missing is named). Depth is described, never decided on: depth.csv gives each arm's
shallowest layer as good as the best. Rules: docs/statistics.md; the evidence column gives
every number.</p>
{_html_table(classes)}
<h2>Figures</h2>
{figure_html or "<p>No figures: the table holds no test-set rows to draw.</p>"}
<h2>Summary table</h2>
<p>Main test metric per task, test set, model and checkpoint: mean ± sd over seeds and the
95 % bootstrap interval over test proteins, at the best-validation layer and at the last
layer. Every column, unrounded: summary.csv.</p>
{_html_table(readable_summary(summary))}
</body>
</html>
"""
    path = out_dir / INDEX_FILE
    path.write_text(page, encoding="utf-8")
    return path


def make_report(results_csv: str | Path, out_dir: str | Path,
                margins: dict | None = None) -> list[Path]:
    """Write every figure (PNG + SVG), the tables and index.html; return the paths written.

    ``margins``: metric -> smallest effect of interest (default ``DEFAULT_MARGINS``).
    Raises FileNotFoundError / ValueError naming ``results_csv`` when it is missing, empty
    or not a results table.
    """
    results_csv, out_dir = Path(results_csv), Path(out_dir)
    frame = _load(results_csv)
    try:
        # figures: probes per layer (frozen cells), of the selection the decisions use
        rows = decision_rows(main_test_rows(frozen_rows(frame)))
        analysis = analyse(frame, results_csv.parent, margins=margins)  # predictions beside
        summary = summary_table(frame, analysis)
    except ValueError as err:
        raise ValueError(f"{results_csv}: {err}") from err
    out_dir.mkdir(parents=True, exist_ok=True)
    table_paths = write_tables(frame, out_dir, analysis=analysis)
    encoders = _encoders(rows).sort_values(["family", "n_params", "model"])
    colours = plots.colour_map(list(dict.fromkeys(encoders["model"])))
    onehot = _onehot_by_panel(rows, analysis.intervals)
    with plots.paper_style():
        figures = [*_depth_figures(rows, out_dir, colours, onehot, results_csv.parent,
                                   decision_rows(analysis.depth)),
                   *_scaling_figures(rows, out_dir, onehot, analysis.intervals),
                   *_checkpoint_figures(rows, out_dir, colours, onehot)]
    index = write_index(out_dir, results_csv.name, figures, summary, margins)
    log.info("report: %d figures, tables and %s in %s", len(figures), INDEX_FILE, out_dir)
    return [*(p for f in figures for p in (f.png, f.svg)), *table_paths, index]
