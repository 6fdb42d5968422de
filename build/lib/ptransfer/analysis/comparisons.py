"""Intervals on every reported score and paired comparisons with Holm-adjusted p-values.

An *arm* is every seed of one (task, eval_set, model, checkpoint, ablation, ablation_scope)
that shares its probe, data fingerprint and precision. Its estimate is the mean over seeds of
the rows' values at the layer choice (``best``: each seed's own best-validation layer;
``last``). Its bootstrap distribution is two-stage: the panel's item resamples (shared by all
arms, ``bootstrap``), then seeds drawn with replacement per resample (``seed_average``).

``intervals_table``: one row per arm and layer choice. ``comparisons_table``: per (task,
eval_set, model, checkpoint, layer choice) pretrained vs each ablation, pretrained vs one-hot,
each ablation vs one-hot, and per arm best vs last layer; delta = gain of ``a`` over ``b``
(positive = ``a`` better, sign flipped for lower-is-better metrics), paired percentile
interval, Wald p from the bootstrap SE, Holm over every comparable row of the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ptransfer.analysis.bootstrap import Replicates, stable_seed
from ptransfer.analysis.intervals import (
    LEVEL,
    bootstrap_se,
    holm,
    percentile_interval,
    seed_average,
    seed_resample,
    wald_p,
)
from ptransfer.analysis.panels import LAYER_CHOICES, ONEHOT_FAMILY, PANEL, higher_is_better

COMPARABILITY = ("head", "data_fingerprint", "precision")
ARM_KEY = [*PANEL, "model", "checkpoint", "ablation", "ablation_scope", *COMPARABILITY]
INFO = ["family", "n_params", "checkpoint_step", "metric"]
METHOD = "percentile bootstrap over proteins, seeds resampled per resample (two-stage)"
FULL_SCOPE = "full"


@dataclass
class Arm:
    """The seeds of one arm: key fields, and per seed cell_id, layers and row values."""

    key: dict
    cells: pd.DataFrame  # one row per seed: cell_id, seed, best, last, and per-layer values
    layer_values: dict = field(default_factory=dict)  # (cell_id, layer) -> row value

    @property
    def label(self) -> str:
        if self.key["family"] == ONEHOT_FAMILY:
            return "onehot"
        scope = self.key["ablation_scope"]
        return self.key["ablation"] + ("" if scope == FULL_SCOPE else f" ({scope})")

    def layers(self, choice: str) -> list[int]:
        return [int(v) for v in self.cells[choice]]

    def estimate(self, layers: list[int]) -> float:
        values = [self.layer_values.get((c, layer), np.nan)
                  for c, layer in zip(self.cells["cell_id"], layers)]
        return float(np.mean(values))

    def distribution(self, layers: list[int], reps: Replicates) -> tuple[np.ndarray | None, str]:
        """B replicates of the seed-mean at ``layers`` (one per seed), or None and why."""
        eval_set = self.key["eval_set"]
        per_seed = []
        for cell_id, layer in zip(self.cells["cell_id"], layers):
            values = reps.values.get((cell_id, eval_set, layer))
            if values is None:
                why = reps.notes.get((cell_id, eval_set), f"no predictions at layer {layer}")
                return None, f"{cell_id}: {why}"
            per_seed.append(values)
        rng = np.random.default_rng([reps.seed, stable_seed(*self.key.values())])
        counts = seed_resample(len(per_seed), reps.n_resamples, rng)
        return seed_average(np.vstack(per_seed), counts), ""


def with_defaults(rows: pd.DataFrame) -> pd.DataFrame:
    """Older tables lack the comparability columns: treat them as one value ("")."""
    frame = rows.copy()
    for column in (*COMPARABILITY, "ablation_scope"):
        if column not in frame.columns:
            frame[column] = ""
        frame[column] = frame[column].fillna("").astype(str)
    frame.loc[frame["ablation_scope"] == "", "ablation_scope"] = FULL_SCOPE
    return frame


def arms_of(rows: pd.DataFrame) -> list[Arm]:
    """Every arm of ``main_test_rows`` rows (see module docstring)."""
    rows = with_defaults(rows)
    arms = []
    for _, part in rows.groupby(ARM_KEY, sort=False, dropna=False):
        first = part.iloc[0]
        key = {k: first[k] for k in [*ARM_KEY, *INFO]}
        cells = part.groupby("cell_id", sort=False).agg(
            seed=("seed", "first"), n_layers=("n_layers", "first")).reset_index()
        best = part[part["best_layer"]].groupby("cell_id")["layer"].first()
        cells["best"] = cells["cell_id"].map(best)
        cells["last"] = cells["n_layers"].astype(int) - 1
        cells = cells.dropna(subset=["best"]).sort_values("seed").reset_index(drop=True)
        if cells.empty:
            continue
        values = {(c, int(layer)): v for c, layer, v in
                  zip(part["cell_id"], part["layer"], part["value"])}
        arms.append(Arm(key, cells, values))
    return arms


def _items_equal(a: Arm, b: Arm, reps: Replicates) -> bool:
    eval_set = a.key["eval_set"]
    sets = [reps.items.get((c, eval_set)) for arm in (a, b) for c in arm.cells["cell_id"]]
    if any(s is None for s in sets):
        return True  # no predictions: nothing to compare item by item, the note says why
    return all(np.array_equal(sets[0], s) for s in sets[1:])


def comparability(a: Arm, b: Arm, reps: Replicates | None = None) -> str:
    """Why ``a`` and ``b`` may not be compared ("" when they may)."""
    reasons = [f"{k} differs ({a.key[k] or '?'} vs {b.key[k] or '?'})" for k in COMPARABILITY
               if a.key[k] != b.key[k]]
    if reps is not None and not reasons and not _items_equal(a, b, reps):
        reasons.append("scored items differ")
    return "; ".join(reasons)


def _interval_row(arm: Arm, choice: str, reps: Replicates) -> dict:
    layers = arm.layers(choice)
    dist, note = arm.distribution(layers, reps)
    eval_set, first = arm.key["eval_set"], arm.cells["cell_id"].iloc[0]
    items = reps.items.get((first, eval_set))
    low, high = (percentile_interval(dist, n_items=len(items)) if dist is not None
                 else (np.nan, np.nan))
    return {**{k: arm.key[k] for k in [*ARM_KEY, *INFO]}, "arm": arm.label,
            "layer_choice": choice, "layers": " ".join(map(str, layers)),
            "estimate": arm.estimate(layers), "ci_low": low, "ci_high": high,
            "se": bootstrap_se(dist) if dist is not None else np.nan,
            "n_seeds": len(arm.cells), "n_items": len(items) if items is not None else np.nan,
            "n_scored": reps.n_scored.get((first, eval_set), np.nan), "level": LEVEL,
            "method": METHOD, "n_resamples": reps.n_resamples, "note": note}


def intervals_table(arms: list[Arm], reps: Replicates) -> pd.DataFrame:
    """One row per arm and layer choice: estimate, 95 % interval, SE, counts, method."""
    return pd.DataFrame([_interval_row(arm, choice, reps)
                         for arm in arms for choice in LAYER_CHOICES])


def compare(a: Arm, layers_a: list[int], b: Arm, layers_b: list[int],
            reps: Replicates) -> dict:
    """Estimates, delta (gain of a over b), paired interval, SE and p of one comparison."""
    sign = 1.0 if higher_is_better(a.key["metric"]) else -1.0
    est_a, est_b = a.estimate(layers_a), b.estimate(layers_b)
    out = {"estimate_a": est_a, "estimate_b": est_b, "delta": sign * (est_a - est_b),
           "ci_low": np.nan, "ci_high": np.nan, "se": np.nan, "p_value": np.nan,
           "n_seeds_a": len(a.cells), "n_seeds_b": len(b.cells),
           "not_comparable": comparability(a, b, reps), "note": ""}
    items = reps.items.get((a.cells["cell_id"].iloc[0], a.key["eval_set"]))
    out["n_items"] = len(items) if items is not None else np.nan
    if out["not_comparable"]:
        out["delta"] = np.nan  # refused: the two numbers are shown, their difference is not
        return out
    if a is b and layers_a == layers_b:
        out["note"] = "best-validation and last layer are the same layer: no test"
        return out
    dist_a, note_a = a.distribution(layers_a, reps)
    dist_b, note_b = b.distribution(layers_b, reps)
    if dist_a is None or dist_b is None:
        out["note"] = "; ".join(n for n in (note_a, note_b) if n)
        return out
    delta = sign * (dist_a - dist_b)
    out["ci_low"], out["ci_high"] = percentile_interval(delta, n_items=out["n_items"])
    out["se"] = bootstrap_se(delta)
    out["p_value"] = wald_p(out["delta"], out["se"])
    return out


def _pairs(group: list[Arm], onehots: list[Arm]):
    """(a, b) arm pairs of one (task, eval_set, model, checkpoint), in reading order."""
    pretrained = [a for a in group if a.key["ablation"] == "pretrained"]
    ablations = [a for a in group if a.key["ablation"] != "pretrained"]
    for p in pretrained:
        for x in ablations:
            yield p, x
    for x in [*pretrained, *ablations]:
        for o in onehots:
            yield x, o


def comparisons_table(arms: list[Arm], reps: Replicates) -> pd.DataFrame:
    """Every comparison (see module docstring), with ``p_holm`` over the comparable rows."""
    onehots: dict[tuple, list[Arm]] = {}
    groups: dict[tuple, list[Arm]] = {}
    for arm in arms:
        panel = (arm.key["task"], arm.key["eval_set"])
        if arm.key["family"] == ONEHOT_FAMILY:
            onehots.setdefault(panel, []).append(arm)
        else:
            groups.setdefault((*panel, arm.key["model"], arm.key["checkpoint"]), []).append(arm)
    records = []
    for (task, eval_set, model, checkpoint), group in groups.items():
        first = group[0].key
        head = {"task": task, "eval_set": eval_set, "model": model, "checkpoint": checkpoint,
                **{k: first[k] for k in INFO}}
        for choice in LAYER_CHOICES:
            for a, b in _pairs(group, onehots.get((task, eval_set), [])):
                records.append({**head, "layer_choice": choice, "a": a.label, "b": b.label,
                                **compare(a, a.layers(choice), b, b.layers(choice), reps)})
        for a in group:
            records.append({**head, "layer_choice": "best vs last", "a": f"{a.label} (best)",
                            "b": f"{a.label} (last)",
                            **compare(a, a.layers("best"), a, a.layers("last"), reps)})
    table = pd.DataFrame(records)
    if table.empty:
        return table
    table["p_holm"] = holm(table["p_value"])
    table["holm_family"] = "every comparable row of this table"
    table["level"], table["n_resamples"], table["method"] = LEVEL, reps.n_resamples, METHOD
    return table
