"""Depth, described (never decided): per arm, the shallowest layer as good as the best.

For every encoder arm (all seeds of one configuration), each seed's best layer ``b_s`` is
chosen on validation (the rows' ``best_layer``). The *shallowest equivalent layer* is the
smallest layer ``l`` whose validation score is equivalent to the best layer's within the
metric's margin: the paired difference ``score(l) - score(b_s)`` over validation proteins
(seeds paired, as best vs last), TOST at 5 % (PLMSommelier's "shallowest layer within
tolerance", made an interval test). Without such a layer, or without a margin, it is the
best layer itself (the most common over seeds). It is chosen on validation and reported on
test: its score with a 95 % interval, its paired difference from the best layer with a 95 %
interval, and its fraction of the model's depth ``l / (n_layers - 1)``. Each layer is tested
at 5 % without adjustment: this describes where the features are, it decides nothing.

``depth_line`` is ``collect``'s summary of the table: in how many (model, task, test set)
groups the best layer is not the last, and the median depth fraction of the shallowest
equivalent layer (the paper's "middle layers suffice", measured).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ptransfer.analysis.bootstrap import Replicates
from ptransfer.analysis.comparisons import ARM_KEY, INFO, Arm, arm_interval, compare
from ptransfer.analysis.margins import margin_for
from ptransfer.analysis.panels import ONEHOT_FAMILY

TWIN_KEY = [k for k in ARM_KEY if k != "eval_set"]  # an arm's validation twin: same cells
COLUMNS = [*ARM_KEY, *INFO, "arm", "n_layers", "best_layers", "best_rel_depth", "best_is_last",
           "shallowest_layer", "shallowest_rel_depth", "margin", "val_delta", "val_p_equiv",
           "estimate", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "note"]


def _twin(arm: Arm) -> tuple:
    return tuple(arm.key[k] for k in TWIN_KEY)


def validation_layers(val_rows: pd.DataFrame) -> dict[str, set[int]]:
    """cell_id -> every layer up to its best one (the candidates of the search)."""
    best = val_rows[val_rows["best_layer"]].groupby("cell_id")["layer"].first()
    return {str(c): set(range(int(b) + 1)) for c, b in best.items()}


def _mode(layers: list) -> int:
    values, counts = np.unique(np.asarray(layers, dtype=int), return_counts=True)
    return int(values[np.argmax(counts)])


def shallowest(val_arm: Arm, val_reps: Replicates, margin: float | None
               ) -> tuple[int | None, dict | None, str]:
    """(layer, its validation comparison with the best layers or None, note)."""
    best = val_arm.layers("best")
    if not best or any(not np.isfinite(b) for b in best):
        return None, None, "no best layer for every seed"
    if margin is None:
        return _mode(best), None, f"no margin for {val_arm.metric}: the best layer itself"
    why = "no shallower layer is equivalent on validation"
    for layer in range(int(max(best)) + 1):
        if [layer] * len(best) == best:  # the best layer of every seed: equal to itself
            return layer, None, ""
        out = compare(val_arm, [layer] * len(best), val_arm, best, val_reps, margin)
        if out["verdict"] == "equivalent":
            return layer, out, ""
        if not np.isfinite(out["p_equiv"]) and out["note"]:
            why = f"{why} (validation: {out['note']})"
            break
    return _mode(best), None, why


def _row(arm: Arm, val_arm: Arm | None, reps: Replicates, val_reps: Replicates,
         margins) -> dict:
    n_layers = int(arm.cells["n_layers"].iloc[0])
    best = arm.layers("best")
    margin = margin_for(arm.metric, margins)
    row = {**{k: arm.key[k] for k in [*ARM_KEY, *INFO]}, "arm": arm.label,
           "n_layers": n_layers, "best_layers": " ".join(str(x) for x in best),
           "margin": margin}
    finite = [b for b in best if np.isfinite(b)]
    row["best_rel_depth"] = float(np.mean(finite)) / max(n_layers - 1, 1) if finite else np.nan
    row["best_is_last"] = bool(finite) and all(b == n_layers - 1 for b in finite)
    if val_arm is None:
        return {**row, "note": "no validation rows"}
    layer, found, note = shallowest(val_arm, val_reps, margin)
    if layer is None:
        return {**row, "note": note}
    same = [layer] * len(best)
    test = arm_interval(arm, same, reps)
    paired = compare(arm, same, arm, best, reps, margin) if same != best else None
    notes = [n for n in (note, test["note"], paired["note"] if paired else "") if n]
    return {**row, "shallowest_layer": layer,
            "shallowest_rel_depth": layer / max(n_layers - 1, 1),
            "val_delta": found["delta"] if found else 0.0,
            "val_p_equiv": found["p_equiv"] if found else np.nan,
            "estimate": test["estimate"], "ci_low": test["ci_low"], "ci_high": test["ci_high"],
            "delta": paired["delta"] if paired else 0.0,
            "delta_ci_low": paired["ci_low"] if paired else np.nan,
            "delta_ci_high": paired["ci_high"] if paired else np.nan,
            "note": "; ".join(dict.fromkeys(notes))}


def depth_table(arms: list[Arm], val_arms: list[Arm], reps: Replicates,
                val_reps: Replicates, margins=None) -> pd.DataFrame:
    """One row per encoder arm: best and shallowest equivalent layer (module docstring)."""
    twins = {_twin(a): a for a in val_arms}
    rows = [_row(arm, twins.get(_twin(arm)), reps, val_reps, margins) for arm in arms
            if arm.key["family"] != ONEHOT_FAMILY]
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def shallow_layers(val_arms: list[Arm], val_reps: Replicates,
                   margins=None) -> dict[str, set[int]]:
    """cell_id -> the shallowest equivalent layer of its arm (to score on the test sets)."""
    out: dict[str, set[int]] = {}
    for val_arm in val_arms:
        if val_arm.key["family"] == ONEHOT_FAMILY:
            continue
        layer, _, _ = shallowest(val_arm, val_reps, margin_for(val_arm.metric, margins))
        if layer is not None:
            for cell_id in val_arm.cells["cell_id"]:
                out.setdefault(str(cell_id), set()).add(layer)
    return out


def depth_line(depth: pd.DataFrame, final: dict[str, str]) -> str:
    """The collect summary line over the pretrained arms at each model's final checkpoint,
    one per (model, task, test set) (fp32 first when several precisions ran)."""
    mine = depth[(depth["ablation"] == "pretrained")
                 & (depth["checkpoint"] == depth["model"].map(final))] if len(depth) else depth
    if mine.empty:
        return "depth: no pretrained arm at a final checkpoint"
    mine = mine.sort_values("precision", key=lambda s: s != "fp32").drop_duplicates(
        ["model", "task", "eval_set"])
    not_last = int((~mine["best_is_last"].astype(bool)).sum())
    fractions = mine["shallowest_rel_depth"].dropna()
    median = f"{fractions.median():.2f}" if len(fractions) else "n/a"
    return (f"depth: the best layer is not the last in {not_last} of {len(mine)} (model, "
            f"task, test set) groups; the shallowest layer as good as the best (within the "
            f"margin, on validation) sits at a median {median} of the depth")
