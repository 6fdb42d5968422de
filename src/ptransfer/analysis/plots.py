"""Figures of the report, drawn headless (Agg) at paper size.

Every function takes an already-aggregated frame of one panel (task, eval_set) and returns a
``matplotlib.figure.Figure``; ``save`` writes it as PNG and SVG. Figures are built with the
object API (``Figure``), never ``pyplot``, so no GUI backend is touched and nothing leaks
between figures. Colours are Okabe-Ito (colour-blind safe): one per model (or family),
line style per ablation, one-hot as a grey horizontal reference line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter

from ptransfer.analysis.panels import higher_is_better

# Okabe & Ito (2008), ordered so that the low-contrast yellow comes last.
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000"]
ONEHOT_GREY = "#7F7F7F"
ABLATION_STYLE = {
    "pretrained": {"linestyle": "-", "marker": "o", "label": "pretrained"},
    "random_init": {"linestyle": "--", "marker": "s", "label": "random init"},
    "stat_transfer": {"linestyle": ":", "marker": "^", "label": "stat. transfer"},
}
METRIC_NAMES = {
    "spearman": "Spearman ρ (unitless)",
    "pearson": "Pearson r (unitless)",
    "mse": "MSE (squared target units)",
    "ndcg": "NDCG (unitless)",
    "accuracy": "accuracy (fraction correct)",
    "macro_f1": "macro F1 (unitless)",
    "roc_auc": "ROC AUC (unitless)",
}
FIGSIZE = (6.4, 3.4)  # inches: a full text width; fonts stay >= 8 pt when printed
PNG_DPI = 200
PAPER_STYLE = {
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "lines.linewidth": 1.5, "lines.markersize": 4,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "svg.hashsalt": "ptransfer",  # stable SVG ids: identical reruns diff clean
}


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """rcParams for every figure of the report (wrap both drawing and saving)."""
    with mpl.rc_context(PAPER_STYLE):
        yield


def colour_map(names: list[str]) -> dict[str, str]:
    """Name -> Okabe-Ito colour, in the given order (colours repeat after eight names)."""
    return {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(names)}


def metric_label(metric: str) -> str:
    name = METRIC_NAMES.get(metric, f"{metric} (unitless)")
    return f"{name}, {'higher' if higher_is_better(metric) else 'lower'} is better"


def _new_figure(title: str, metric: str, xlabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric_label(metric))
    return fig, ax


BAND_LABELS = {"sd": "band: ±1 sd over seeds\n(≥ 2 seeds)",
               "ci": "band: 95 % bootstrap interval\nover test proteins (1 seed)"}
STAR = {"marker": "*", "markersize": 11, "linestyle": "none", "markeredgecolor": "black"}
STAR_LABEL = "layer chosen on validation"
DIAMOND = {"marker": "D", "markersize": 6, "linestyle": "none", "markeredgecolor": "black"}
DIAMOND_LABEL = "shallowest layer as good\nas the best (validation)"


def bands(points: pd.DataFrame) -> pd.DataFrame:
    """``points`` with ``band_low``/``band_high``/``band`` filled where missing: ±1 sd over
    seeds where there are two or more (``band`` "sd"), else none (NaN)."""
    points = points.copy()
    for column in ("band_low", "band_high", "band"):
        if column not in points:
            points[column] = np.nan if column != "band" else ""
    seeded = points["band_low"].isna() & np.isfinite(points["sd"].astype(float))
    points.loc[seeded, "band_low"] = points["mean"] - points["sd"]
    points.loc[seeded, "band_high"] = points["mean"] + points["sd"]
    points.loc[seeded, "band"] = "sd"
    return points


def _draw(ax, x, mean, low, high, colour: str, ablation: str) -> None:
    """A mean line in the ablation's style, with its band where it has one."""
    style = ABLATION_STYLE.get(ablation, {"linestyle": "-.", "marker": "x"})
    x, mean, low, high = (np.asarray(v, dtype=float) for v in (x, mean, low, high))
    ax.plot(x, mean, color=colour, linestyle=style["linestyle"], marker=style["marker"])
    shown = np.isfinite(low) & np.isfinite(high)
    if shown.any():
        ax.fill_between(x[shown], low[shown], high[shown], color=colour, alpha=0.15,
                        linewidth=0)


@dataclass(frozen=True)
class Reference:
    """The one-hot baseline of a panel: its ``mean`` and band [``low``, ``high``] of kind
    ``band`` (a key of :data:`BAND_LABELS`: ±1 sd over two or more seeds, else the 95 %
    interval over test proteins; "" and NaN: no band)."""

    mean: float
    low: float = float("nan")
    high: float = float("nan")
    band: str = ""

    @property
    def has_band(self) -> bool:
        return bool(self.band) and bool(np.isfinite(self.low) and np.isfinite(self.high))


def _reference(ax, onehot: Reference | None) -> None:
    """One-hot baseline as a grey horizontal line, with its band (a tie with it can only
    be judged against both intervals)."""
    if onehot is None or not np.isfinite(onehot.mean):
        return
    ax.axhline(onehot.mean, color=ONEHOT_GREY, linestyle="-", linewidth=1.2, zorder=1)
    if onehot.has_band:
        ax.axhspan(onehot.low, onehot.high, color=ONEHOT_GREY, alpha=0.15, linewidth=0)


def _legend(fig: Figure, colours: dict[str, str], ablations: list[str], onehot: bool,
            band_kinds: list[str] = (), star: bool = False, diamond: bool = False) -> None:
    """Legend outside the axes: colour = model/family, line style = ablation, the star,
    what the shaded bands are (only the kinds drawn)."""
    handles = [Line2D([], [], color=c, linewidth=3) for c in colours.values()]
    labels = list(colours)
    for ablation in ablations:
        style = ABLATION_STYLE.get(ablation, {"linestyle": "-.", "marker": "x",
                                              "label": ablation})
        handles.append(Line2D([], [], color="#333333", linestyle=style["linestyle"],
                              marker=style["marker"]))
        labels.append(style["label"])
    if onehot:
        handles.append(Line2D([], [], color=ONEHOT_GREY, linewidth=1.2))
        labels.append("one-hot baseline")
    if star:
        handles.append(Line2D([], [], **STAR, color="#333333"))
        labels.append(STAR_LABEL)
    if diamond:
        handles.append(Line2D([], [], **DIAMOND, color="#333333"))
        labels.append(DIAMOND_LABEL)
    for kind in band_kinds:
        handles.append(Patch(color="#333333", alpha=0.15, linewidth=0))
        labels.append(BAND_LABELS[kind])
    fig.legend(handles, labels, loc="outside right upper", frameon=False)


def _lines(ax, points: pd.DataFrame, x: str, colour_by: str, colours: dict[str, str]) -> None:
    """One mean line (with its band, ``bands``) per (colour group, ablation), along ``x``."""
    for (group, ablation), line in points.groupby([colour_by, "ablation"], sort=False):
        line = line.sort_values(x)
        _draw(ax, line[x], line["mean"], line["band_low"], line["band_high"], colours[group],
              ablation)


def _finish(fig, ax, points: pd.DataFrame, colour_by: str, colours: dict[str, str],
            onehot: Reference | None, star: bool = False, diamond: bool = False) -> Figure:
    _reference(ax, onehot)
    used = {g: colours[g] for g in points[colour_by].unique()}
    drawn = set(points["band"]) | ({onehot.band} if onehot is not None and onehot.has_band
                                   else set())
    kinds = [k for k in BAND_LABELS if k in drawn]
    _legend(fig, used, list(points["ablation"].unique()), onehot is not None, kinds, star,
            diamond)
    return fig


def depth_figure(curves: pd.DataFrame, onehot: Reference | None,
                 colours: dict[str, str], metric: str, title: str,
                 best: pd.DataFrame | None = None,
                 shallow: pd.DataFrame | None = None) -> Figure:
    """Test metric vs relative depth for one panel.

    ``curves``: one row per (model, ablation, layer) with columns rel_depth, mean, sd
    (sd over seeds, NaN with one seed) and, optionally, band_low/band_high/band ("ci": a
    one-seed curve's bootstrap interval, ``layer_bands``); the band is otherwise ±1 sd over
    seeds where there are two or more. ``best``: one row per (model, ablation) with
    rel_depth and mean of the best-validation layer, drawn as a star on its line;
    ``shallow``: the same for the shallowest layer as good as the best (``depth``), drawn as
    a diamond.
    """
    fig, ax = _new_figure(title, metric, "relative depth (layer / last layer; 0 = embedding)")
    curves = bands(curves)
    _lines(ax, curves, "rel_depth", "model", colours)
    shallow = shallow if shallow is not None else pd.DataFrame()
    best = best if best is not None else pd.DataFrame()
    for marks, style in ((shallow, DIAMOND), (best, STAR)):
        for row in marks.itertuples(index=False):
            ax.plot([row.rel_depth], [row.mean], **style,
                    color=colours.get(row.model, "#333333"), zorder=5)
    return _finish(fig, ax, curves, "model", colours, onehot, star=not best.empty,
                   diamond=not shallow.empty)


def scaling_figure(points: pd.DataFrame, onehot: Reference | None,
                   colours: dict[str, str], metric: str, title: str) -> Figure:
    """Best-validation-layer test metric vs parameter count (log x), per family and ablation.

    ``points``: one row per (family, ablation, model) with columns n_params, mean, sd.
    """
    fig, ax = _new_figure(title, metric, "encoder parameters (count, log scale)")
    ax.set_xscale("log")
    points = bands(points)
    _lines(ax, points, "n_params", "family", colours)
    return _finish(fig, ax, points, "family", colours, onehot)


def checkpoint_figure(points: pd.DataFrame, onehot: Reference | None,
                      colours: dict[str, str], metric: str, title: str) -> Figure:
    """Best-validation-layer test metric vs pretraining step, per model and ablation.

    ``points``: one row per (model, ablation, checkpoint_step) with columns mean, sd.
    """
    fig, ax = _new_figure(title, metric, "pretraining step (optimizer updates)")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 500k, 1M: no 6-digit tick labels
    points = bands(points)
    _lines(ax, points, "checkpoint_step", "model", colours)
    return _finish(fig, ax, points, "model", colours, onehot)


def save(fig: Figure, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``stem.png`` and ``stem.svg`` (no timestamps, so reruns are byte-stable)."""
    png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
    fig.savefig(png, dpi=PNG_DPI, metadata={"Software": None})
    fig.savefig(svg, metadata={"Date": None})
    return png, svg
