"""The paper's task taxonomy, decided from intervals (rules: docs/statistics.md).

Per (task, eval_set, model, checkpoint), at the best-validation layer:

1. *Benefit*, from the comparisons table (Holm-adjusted, ``ALPHA``): pretrained vs every
   ablation present and vs one-hot. "yes" when pretrained is significantly better in every
   one; "no" when some baseline is significantly better than pretrained; otherwise unresolved.
   A missing arm (no pretrained, no ablation, no one-hot) is named, never guessed.
2. *Alignment* (only when benefit is "yes"): the trend of the pretrained score along each
   axis the results hold: pretraining checkpoints of the model (``checkpoint_step``), depth
   (up to 9 evenly spaced layers of this checkpoint, ``bootstrap.depth_layers``) and size (``n_params`` of the family's models at their final
   checkpoints). Trend = Spearman correlation of axis value and score (sign-aware: positive =
   better with more), with a percentile interval over the same item resamples. Aligned when
   every present axis rises (interval above 0) and a checkpoint or size axis is present; not
   aligned when some axis falls (interval below 0); otherwise alignment is unknown or
   unresolved, said in words.

Classes: ``ALIGNED``, ``NOT_ALIGNED``, ``NO_BENEFIT``, ``INCONCLUSIVE``; ``evidence`` is the
sentence with the numbers behind the class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ptransfer.analysis.bootstrap import Replicates, depth_layers
from ptransfer.analysis.comparisons import FULL_SCOPE, Arm
from ptransfer.analysis.intervals import percentile_interval
from ptransfer.analysis.panels import FINAL_CHECKPOINT, ONEHOT_FAMILY, higher_is_better

ALIGNED = "benefits, aligned"
NOT_ALIGNED = "benefits, not aligned"
NO_BENEFIT = "no benefit"
INCONCLUSIVE = "inconclusive"
CLASSES = (ALIGNED, NOT_ALIGNED, NO_BENEFIT, INCONCLUSIVE)
ALPHA = 0.05
AXES = ("checkpoint", "depth", "size")


def _fmt(value: float, digits: int = 3) -> str:
    return "nan" if not np.isfinite(value) else f"{value:+.{digits}f}"


def _p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.2g}"


def verdict(row: pd.Series) -> str:
    """better / worse / unresolved / not comparable, for one comparisons row."""
    if row["not_comparable"]:
        return "not comparable"
    if np.isfinite(row["p_holm"]) and row["p_holm"] < ALPHA and row["delta"] != 0:
        return "better" if row["delta"] > 0 else "worse"
    return "unresolved"


def benefit(comparisons: pd.DataFrame, ablations: list[str], has_onehot: bool
            ) -> tuple[str, str]:
    """("yes" | "no" | "unresolved", evidence) from the group's best-layer comparisons."""
    rows = comparisons[(comparisons["layer_choice"] == "best")
                       & (comparisons["a"] == "pretrained")]
    missing = []
    if rows.empty and not ablations and not has_onehot:
        return "unresolved", "no pretrained arm and no baseline in these results"
    if not ablations:
        missing.append("no random_init or stat_transfer arm")
    if not has_onehot:
        missing.append("no one-hot baseline")
    parts, verdicts = [], []
    for _, row in rows.iterrows():
        v = verdict(row)
        verdicts.append(v)
        detail = (row["not_comparable"] if v == "not comparable" else
                  f"{_fmt(row['delta'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}], "
                  f"Holm p {_p(row['p_holm'])}" + (f", {row['note']}" if row["note"] else ""))
        parts.append(f"pretrained vs {row['b']}: {v} ({detail})")
    evidence = "; ".join(parts + missing)
    if "worse" in verdicts:
        return "no", evidence
    if verdicts and all(v == "better" for v in verdicts) and not missing:
        return "yes", evidence
    return "unresolved", evidence


def trend(x: np.ndarray, estimates: np.ndarray, dists: np.ndarray, metric: str,
          n_items: int | None = None) -> tuple[float, float, float]:
    """Spearman trend of score along ``x`` (K points): estimate and percentile interval.

    ``dists`` is K x B (each point's replicates on the shared resamples); sign-aware, so a
    positive trend means better with larger ``x`` for every metric.
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


def _axis_points(axis: str, arm: Arm, pretrained: list[Arm]) -> list[tuple[float, Arm, list]]:
    """(x, arm, layers) of the axis for ``arm`` (a pretrained arm at one checkpoint)."""
    same = [a for a in pretrained if all(a.key[k] == arm.key[k] for k in
                                         ("head", "data_fingerprint", "precision",
                                          "ablation_scope"))]
    if axis == "depth":
        layers = depth_layers(int(arm.cells["n_layers"].iloc[0]))
        return [(float(layer), arm, [layer] * len(arm.cells)) for layer in layers]
    if axis == "checkpoint":
        points = [a for a in same if a.key["model"] == arm.key["model"]
                  and np.isfinite(float(a.key["checkpoint_step"]))]
        return [(float(a.key["checkpoint_step"]), a, a.layers("best")) for a in points]
    final = {a.key["model"]: a for a in same if a.key["family"] == arm.key["family"]
             and a.key["checkpoint"] == FINAL_CHECKPOINT}
    return [(float(a.key["n_params"]), a, a.layers("best")) for a in final.values()]


def axis_trend(axis: str, arm: Arm, pretrained: list[Arm], reps: Replicates) -> dict:
    """trend, interval and point count of one axis (NaN trend when the axis is absent)."""
    points = _axis_points(axis, arm, pretrained)
    out = {f"trend_{axis}": np.nan, f"trend_{axis}_low": np.nan,
           f"trend_{axis}_high": np.nan, f"trend_{axis}_points": len(points), "why": ""}
    if len({x for x, _, _ in points}) < 2:
        out["why"] = "absent"
        return out
    dists = [a.distribution(layers, reps) for _, a, layers in points]
    estimates = np.array([a.estimate(layers) for _, a, layers in points])
    x = np.array([x for x, _, _ in points])
    if any(d is None for d, _ in dists):
        out["why"] = next(note for d, note in dists if d is None)
        dist_matrix = np.full((len(points), reps.n_resamples), np.nan)
    else:
        dist_matrix = np.vstack([d for d, _ in dists])
    items = reps.items.get((arm.cells["cell_id"].iloc[0], arm.key["eval_set"]))
    rho, low, high = trend(x, estimates, dist_matrix, arm.key["metric"],
                           None if items is None else len(items))
    out.update({f"trend_{axis}": rho, f"trend_{axis}_low": low, f"trend_{axis}_high": high})
    return out


def alignment(trends: dict[str, dict]) -> tuple[str, str]:
    """("aligned" | "not aligned" | "unknown", sentence) from the axes' trends."""
    words = []
    status = {}
    for axis, t in trends.items():
        if t["why"] == "absent":
            continue
        low, high = t[f"trend_{axis}_low"], t[f"trend_{axis}_high"]
        status[axis] = ("rises" if low > 0 else "falls" if high < 0 else
                        "unresolved" if np.isfinite(low) else "no interval")
        words.append(f"{axis} trend {_fmt(t[f'trend_{axis}'], 2)} [{_fmt(low, 2)}, "
                     f"{_fmt(high, 2)}] over {t[f'trend_{axis}_points']} points: "
                     f"{status[axis]}" + (f" ({t['why']})" if t["why"] else ""))
    sentence = "; ".join(words)
    if "falls" in status.values():
        return "not aligned", sentence
    if not ({"checkpoint", "size"} & status.keys()):
        return "unknown", ("alignment unknown: no checkpoint or size axis in these results"
                           + (f"; {sentence}" if sentence else ""))
    if all(s == "rises" for s in status.values()):
        return "aligned", sentence
    return "unknown", "alignment unresolved: " + sentence


def _classify(benefit_word: str, align_word: str) -> str:
    if benefit_word == "no":
        return NO_BENEFIT
    if benefit_word == "yes" and align_word == "aligned":
        return ALIGNED
    if benefit_word == "yes" and align_word == "not aligned":
        return NOT_ALIGNED
    return INCONCLUSIVE


def taxonomy_table(arms: list[Arm], comparisons: pd.DataFrame, reps: Replicates
                   ) -> pd.DataFrame:
    """One row per (task, eval_set, model, checkpoint) of the encoders: class and evidence."""
    pretrained = [a for a in arms if a.key["ablation"] == "pretrained"
                  and a.key["family"] != ONEHOT_FAMILY]
    groups: dict[tuple, list[Arm]] = {}
    for arm in arms:
        if arm.key["family"] != ONEHOT_FAMILY:
            key = tuple(arm.key[k] for k in ("task", "eval_set", "model", "checkpoint"))
            groups.setdefault(key, []).append(arm)
    panels_with_onehot = {(a.key["task"], a.key["eval_set"]) for a in arms
                          if a.key["family"] == ONEHOT_FAMILY}
    records = []
    for (task, eval_set, model, checkpoint), group in groups.items():
        mine = (comparisons[(comparisons["task"] == task) & (comparisons["eval_set"] == eval_set)
                            & (comparisons["model"] == model)
                            & (comparisons["checkpoint"] == checkpoint)]
                if not comparisons.empty else comparisons)
        ablations = [a.label for a in group if a.key["ablation"] != "pretrained"]
        pre = [a for a in group if a.key["ablation"] == "pretrained"
               and a.key["ablation_scope"] in (FULL_SCOPE, "")]
        word, evidence = ("unresolved", "no pretrained arm in these results") if not pre else \
            benefit(mine, ablations, (task, eval_set) in panels_with_onehot)
        # Alignment only qualifies a benefit: the trends are computed where benefit is "yes".
        trends = {axis: axis_trend(axis, pre[0], pretrained, reps) for axis in AXES} \
            if word == "yes" else {}
        align_word, align_sentence = alignment(trends) if word == "yes" else ("", "")
        cls = _classify(word, align_word)
        sentence = evidence + (f". {align_sentence}" if align_sentence else "")
        record = {"task": task, "eval_set": eval_set, "model": model, "checkpoint": checkpoint,
                  "family": group[0].key["family"], "metric": group[0].key["metric"],
                  "class": cls, "benefit": word, "alignment": align_word or "",
                  "evidence": sentence}
        for t in trends.values():
            record.update({k: v for k, v in t.items() if k != "why"})
        records.append(record)
    columns = ["task", "eval_set", "model", "checkpoint", "family", "metric", "class",
               "benefit", "alignment", "evidence",
               *[f"trend_{a}{s}" for a in AXES for s in ("", "_low", "_high", "_points")]]
    return pd.DataFrame(records).reindex(columns=columns)
