"""The points of the alignment axes (pretraining checkpoints, model size) and the trends.

- *checkpoint*: a model's checkpoints up to the arm's own, positioned by step when every
  point has one, else by fraction of pretraining (``final`` = 1), else by their order as
  the model config lists them: an order is enough.
- *size*: the models of the arm's **family** (never another family) at their final
  checkpoint, up to the arm's size (``n_params``).

Both keep only arms with the same probe, data and extraction settings. What alignment
concludes from them is in ``alignment``.

Depth is never an axis of alignment (best-in-the-middle layers are normal for PLM probes);
it stays reported as a description, with the checkpoint and size trends: the Spearman
correlation of axis position and score over every point, with a percentile interval over
the same item resamples.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from ptransfer.analysis.bootstrap import Replicates, depth_layers
from ptransfer.analysis.comparisons import Arm
from ptransfer.analysis.intervals import percentile_interval
from ptransfer.analysis.panels import FINAL_CHECKPOINT, higher_is_better

AXES = ("checkpoint", "size")
TRENDS = ("checkpoint", "depth", "size")
# Settings that must be equal for two pretrained arms to lie on one axis: the probe, data
# and extraction (the revision may differ: hub checkpoints are often published as revisions).
SAME_SETUP = ("task", "eval_set", "head", "head_config", "data_fingerprint", "precision",
              "length_policy", "pooled_dtype", "ablation_scope", "selection")


def _same_setup(a: Arm, b: Arm) -> bool:
    return all(a.key[k] == b.key[k] for k in SAME_SETUP)


def _position(arm: Arm, scale: str) -> float:
    """Position on the axis: step, fraction (``final`` = 1 unless given), or order from 1."""
    value = float(arm.key[f"checkpoint_{scale}"])
    if scale == "fraction" and arm.key["checkpoint"] == FINAL_CHECKPOINT:
        return 1.0 if not np.isfinite(value) else value
    return value + 1.0 if scale == "order" else value


def checkpoint_points(arm: Arm, pretrained: list[Arm]) -> tuple[str, list[tuple[float, Arm]]]:
    """(scale, [(position, arm)]) of the model's checkpoints up to ``arm``'s, in order.

    Scale: ``step`` when every checkpoint of the model has one, else ``fraction``, else
    ``order``; ("", []) when no scale covers them all.
    """
    same = {a.key["checkpoint"]: a for a in pretrained
            if a.key["model"] == arm.key["model"] and _same_setup(a, arm)}
    for scale in ("step", "fraction", "order"):
        positions = {name: _position(a, scale) for name, a in same.items()}
        if all(np.isfinite(x) for x in positions.values()):
            mine = positions[arm.key["checkpoint"]]
            points = sorted(((x, same[name]) for name, x in positions.items() if x <= mine),
                            key=lambda point: point[0])
            return scale, points
    return "", []


def size_points(arm: Arm, pretrained: list[Arm], final: dict[str, str]) -> list[tuple[float, Arm]]:
    """[(n_params, arm)] of the family's models at their final checkpoint, up to ``arm``'s
    size; [] when ``arm`` is not at its model's final checkpoint."""
    if final.get(arm.key["model"]) != arm.key["checkpoint"]:
        return []
    models = {a.key["model"]: a for a in pretrained
              if a.key["family"] == arm.key["family"] and _same_setup(a, arm)
              and final.get(a.key["model"]) == a.key["checkpoint"]}
    mine = float(arm.key["n_params"])
    return sorted(((float(a.key["n_params"]), a) for a in models.values()
                   if float(a.key["n_params"]) <= mine), key=lambda point: point[0])


def spearman_trend(x: np.ndarray, estimates: np.ndarray, dists: np.ndarray, metric: str,
                   n_items: int | None = None) -> tuple[float, float, float]:
    """Spearman trend of score along ``x`` (K points): estimate and percentile interval.

    ``dists`` is K x B (each point's replicates on the shared resamples); sign-aware, so a
    positive trend means better with larger ``x`` for every metric. Descriptive only.
    """
    sign = 1.0 if higher_is_better(metric) else -1.0
    rx = rankdata(x) - (len(x) + 1) / 2.0

    def rho(scores: np.ndarray) -> np.ndarray:  # scores: K x B
        ry = rankdata(sign * scores, axis=0) - (len(x) + 1) / 2.0
        denominator = np.sqrt((rx ** 2).sum() * (ry ** 2).sum(axis=0))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, (rx[:, None] * ry).sum(axis=0) / denominator,
                            np.nan)

    estimate = float(rho(np.asarray(estimates, dtype=float)[:, None])[0])
    low, high = percentile_interval(rho(dists), n_items=n_items)
    return estimate, low, high


def _trend_points(axis: str, arm: Arm, pretrained: list[Arm], final: dict[str, str]):
    """[(x, arm, layers)] of a descriptive trend."""
    if axis == "depth":
        layers = depth_layers(int(arm.cells["n_layers"].iloc[0]))
        return [(float(layer), arm, [layer] * len(arm.cells)) for layer in layers]
    if axis == "checkpoint":
        _, points = checkpoint_points(arm, pretrained)
    else:
        points = size_points(arm, pretrained, final)
    return [(x, a, a.layers("best")) for x, a in points]


def describe_trend(axis: str, arm: Arm, pretrained: list[Arm], final: dict[str, str],
                   reps: Replicates) -> dict:
    """``trend_<axis>`` (+ ``_low``, ``_high``, ``_points``): Spearman of the pretrained
    score along the axis, over the item resamples (seeds averaged), NaN when absent."""
    points = _trend_points(axis, arm, pretrained, final)
    out = {f"trend_{axis}": np.nan, f"trend_{axis}_low": np.nan, f"trend_{axis}_high": np.nan,
           f"trend_{axis}_points": len(points)}
    if len({x for x, _, _ in points}) < 2:
        return out
    scores = [a.scores(layers, reps) for _, a, layers in points]
    estimates = np.array([s.values.mean() if s.values.size else np.nan for s in scores])
    if any(s.replicates is None for s in scores):
        dists = np.full((len(points), reps.n_resamples), np.nan)
    else:
        dists = np.vstack([s.replicates.mean(axis=0) for s in scores])
    n_items = next((len(v) for k, v in reps.items.items()
                    if k == (arm.cells["cell_id"].iloc[0], arm.key["eval_set"])), None)
    rho, low, high = spearman_trend(np.array([x for x, _, _ in points]), estimates, dists,
                                    arm.metric, n_items)
    out.update({f"trend_{axis}": rho, f"trend_{axis}_low": low, f"trend_{axis}_high": high})
    return out
