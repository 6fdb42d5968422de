"""Arms, their intervals, and one paired comparison of two arms (rules: docs/statistics.md).

An *arm* is every seed of one (task, eval_set, model, checkpoint, ablation, ablation_scope)
under one configuration (``panels.COMPARABILITY``: probe and its own config, data
fingerprint, precision, length policy, pooled dtype, revision). Its estimate is the mean
over its defined seeds of the rows' values at the layer choice (``best``: each seed's own
best-validation layer; ``last``). A seed whose metric is undefined (NaN: e.g. constant
predictions), or that has no best layer, is left out of the mean *with a note* that reaches
``intervals.csv``, ``comparisons.csv`` and the taxonomy's evidence.

Inference is seed-aware (``inference``): the item variance comes from the panel's paired
item resamples (``bootstrap``), the seed variance from the arms' between-seed variance, on
one t reference with Satterthwaite degrees of freedom.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ptransfer.analysis.bootstrap import Replicates
from ptransfer.analysis.inference import (
    LEVEL,
    Estimate,
    item_variance,
    seed_term,
    verdict,
)
from ptransfer.analysis.intervals import percentile_interval
from ptransfer.analysis.panels import (
    CHECKPOINT_INFO,
    COMPARABILITY,
    FULL_SCOPE,
    NOT_FOR_ONEHOT,
    ONEHOT_FAMILY,
    PANEL,
    higher_is_better,
)
from ptransfer.analysis.seed_pool import SeedPool, one_stochastic_seed, refusal

ARM_KEY = [*PANEL, "model", "checkpoint", "ablation", "ablation_scope", *COMPARABILITY]
INFO = ["family", "n_params", *CHECKPOINT_INFO, "metric"]
METHOD_ONE_SEED = "percentile bootstrap over proteins (expanded), one seed"
METHOD_SEEDS = ("t, Satterthwaite df: bootstrap item variance over proteins + between-seed "
                "variance / S")
METHOD_DELTA = ("paired: t, Satterthwaite df: bootstrap item variance of the paired "
                "difference + each arm's between-seed variance / S")
METHOD_BORROWED = ("t, Satterthwaite df: bootstrap item variance over proteins + a pooled "
                   "seed variance borrowed from same-probe arms (one seed of a stochastic probe)")


@dataclass
class SeedScores:
    """The defined seeds of an arm at one layer choice: values (S), item replicates (S x B)."""

    values: np.ndarray
    replicates: np.ndarray | None
    seeds: list
    notes: list[str] = field(default_factory=list)
    missing: str = ""  # why there are no replicates (no predictions file, metric)


@dataclass
class Arm:
    """The seeds of one arm: key fields, and per seed cell_id, layers and row values."""

    key: dict
    cells: pd.DataFrame  # one row per seed: cell_id, seed, n_layers, best (NaN: none), last
    layer_values: dict = field(default_factory=dict)  # (cell_id, layer) -> row value
    pool: dict = field(default_factory=dict)  # layer choice -> SeedPool | None (seed_pool)

    @property
    def label(self) -> str:
        if self.key["family"] == ONEHOT_FAMILY:
            return "onehot"
        scope = self.key["ablation_scope"]
        return self.key["ablation"] + ("" if scope == FULL_SCOPE else f" ({scope})")

    @property
    def metric(self) -> str:
        return self.key["metric"]

    def layers(self, choice: str) -> list:
        """The layer of each seed at ``choice`` (NaN where a seed has no best layer)."""
        return [int(v) if np.isfinite(v) else np.nan for v in self.cells[choice].astype(float)]

    def scores(self, layers: list, reps: Replicates | None) -> SeedScores:
        """The defined seeds at ``layers`` (one per seed), with notes for the others."""
        eval_set, metric = self.key["eval_set"], self.metric
        values, rows, seeds, notes, missing = [], [], [], [], ""
        for cell_id, seed, layer in zip(self.cells["cell_id"], self.cells["seed"], layers):
            if not np.isfinite(layer):
                notes.append(f"{self.label} seed {seed}: no best layer (every validation score "
                             "undefined)")
                continue
            value = self.layer_values.get((cell_id, int(layer)), np.nan)
            if not np.isfinite(value):
                notes.append(f"{self.label} seed {seed}: {metric} undefined at layer {layer} "
                             "(e.g. constant predictions)")
                continue
            values.append(value)
            seeds.append(seed)
            rep = None if reps is None else reps.values.get((cell_id, eval_set, int(layer)))
            if rep is None and not missing:
                why = (reps.notes.get((cell_id, eval_set), f"no predictions at layer {layer}")
                       if reps is not None else "no replicates")
                missing = f"{cell_id}: {why}"
            rows.append(rep)
        replicates = None if missing or not rows else np.vstack(rows)
        return SeedScores(np.asarray(values, dtype=float), replicates, seeds, notes, missing)

    def estimate(self, layers: list) -> float:
        values = self.scores(layers, None).values
        return float(values.mean()) if values.size else float("nan")


def arms_of(rows: pd.DataFrame) -> list[Arm]:
    """Every arm of ``panels.main_test_rows`` rows (see module docstring)."""
    arms = []
    for _, part in rows.groupby(ARM_KEY, sort=False, dropna=False):
        first = part.iloc[0]
        key = {k: first[k] for k in [*ARM_KEY, *INFO]}
        cells = part.groupby("cell_id", sort=False).agg(
            seed=("seed", "first"), n_layers=("n_layers", "first")).reset_index()
        best = part[part["best_layer"]].groupby("cell_id")["layer"].first()
        cells["best"] = cells["cell_id"].map(best).astype(float)
        cells["last"] = cells["n_layers"].astype(float) - 1
        cells = cells.sort_values("seed").reset_index(drop=True)
        values = {(c, int(layer)): v for c, layer, v in
                  zip(part["cell_id"], part["layer"], part["value"])}
        arms.append(Arm(key, cells, values))
    return arms


def comparability(a: Arm, b: Arm, reps: Replicates | None = None) -> str:
    """Why ``a`` and ``b`` may not be compared ("" when they may).

    Extraction settings are not compared against one-hot (they do not apply to it).
    """
    onehot = ONEHOT_FAMILY in (a.key["family"], b.key["family"])
    keys = [k for k in COMPARABILITY if not (onehot and k in NOT_FOR_ONEHOT)]
    reasons = [f"{k} differs ({a.key[k] or '?'} vs {b.key[k] or '?'})" for k in keys
               if a.key[k] != b.key[k]]
    if reps is not None and not reasons and not _items_equal(a, b, reps):
        reasons.append("scored items differ")
    return "; ".join(reasons)


def _items_equal(a: Arm, b: Arm, reps: Replicates) -> bool:
    eval_set = a.key["eval_set"]
    sets = [reps.items.get((c, eval_set)) for arm in (a, b) for c in arm.cells["cell_id"]]
    sets = [s for s in sets if s is not None]
    return all(np.array_equal(sets[0], s) for s in sets[1:])


def _n_items(arm: Arm, reps: Replicates) -> float:
    for cell_id in arm.cells["cell_id"]:
        items = reps.items.get((cell_id, arm.key["eval_set"]))
        if items is not None:
            return len(items)
    return float("nan")


def arm_estimate(scores: SeedScores, n_items, pool: SeedPool | None = None) -> Estimate:
    """The seed mean with its item variance (bootstrap) and seed term (``inference``);
    ``pool``: a borrowed seed variance for one seed (``seed_pool``)."""
    value = float(scores.values.mean()) if scores.values.size else float("nan")
    var_item = (item_variance(scores.replicates.mean(axis=0), n_items)
                if scores.replicates is not None else float("nan"))
    term = seed_term(scores.values)
    if pool is not None and scores.values.size == 1:
        term = (pool.variance, pool.df + 1)  # a variance with pool.df df: "S - 1" = df
    return Estimate(value, var_item, int(n_items) if np.isfinite(n_items) else 0,
                    [term] if term else [])


def arm_interval(arm: Arm, layers: list, reps: Replicates, choice: str = "best") -> dict:
    """The arm's estimate at ``layers`` (one per seed) with its 95 % interval, SE, df, seed
    counts, method and notes; ``choice``: which borrowed seed variance applies."""
    scores = arm.scores(layers, reps)
    n_items = _n_items(arm, reps)
    lone = one_stochastic_seed(arm, len(scores.values))
    pool = arm.pool.get(choice) if lone else None
    est = arm_estimate(scores, n_items, pool)
    if scores.replicates is None:
        low = high = np.nan
    elif len(scores.values) == 1 and pool is None:  # item error only: expanded percentile
        low, high = percentile_interval(scores.replicates[0], n_items=n_items)
    else:
        low, high = est.interval()
    notes = [*scores.notes, *([scores.missing] if scores.missing else [])]
    if lone:
        notes.append(f"{arm.label}: one seed of a stochastic probe; " + (
            pool.describe() if pool else "no same-probe arm with >= 2 seeds to borrow a seed "
            "variance from: the interval covers test proteins only"))
    return {"estimate": est.value, "ci_low": low, "ci_high": high, "se": est.se,
            "df": est.df if scores.replicates is not None else np.nan,
            "seed_sd": float(np.std(scores.values, ddof=1)) if len(scores.values) > 1
            else np.nan,
            "n_seeds": len(scores.values), "n_seeds_undefined": len(scores.notes),
            "n_items": n_items,
            "method": (METHOD_BORROWED if pool is not None else METHOD_ONE_SEED
                       if len(scores.values) <= 1 else METHOD_SEEDS),
            "note": "; ".join(notes)}


def _interval_row(arm: Arm, choice: str, reps: Replicates) -> dict:
    layers = arm.layers(choice)
    first = arm.cells["cell_id"].iloc[0]
    row = arm_interval(arm, layers, reps, choice)
    note, method = row.pop("note"), row.pop("method")
    return {**{k: arm.key[k] for k in [*ARM_KEY, *INFO]}, "arm": arm.label,
            "layer_choice": choice, "layers": " ".join(str(x) for x in layers), **row,
            "n_scored": reps.n_scored.get((first, arm.key["eval_set"]), np.nan),
            "level": LEVEL, "n_resamples": reps.n_resamples, "method": method, "note": note}


def intervals_table(arms: list[Arm], reps: Replicates) -> pd.DataFrame:
    """One row per arm and layer choice: estimate, 95 % interval, SE, df, counts, method."""
    from ptransfer.analysis.panels import LAYER_CHOICES

    return pd.DataFrame([_interval_row(arm, choice, reps)
                         for arm in arms for choice in LAYER_CHOICES])


def _seed_terms(a: Arm, sa: SeedScores, b: Arm, sb: SeedScores, choice: str,
                per_seed: np.ndarray | None) -> tuple[list, list[str], str]:
    """(seed terms, notes, refusal) of a difference; ``per_seed``: the paired per-seed
    differences when ``a`` is ``b`` (best vs last of one arm).

    A one-seed arm of a stochastic probe borrows its probe's pooled seed variance; then
    both arms' seed variance is that pool's (they share the probe, so the other arm is in
    it): ``s_p^2 (1 / S_a + 1 / S_b)`` on the pool's df, the pooled two-sample t-test.
    """
    lone = [x for x, s in ((a, sa), (b, sb)) if one_stochastic_seed(x, len(s.values))]
    choice = "best vs last" if a is b else choice
    if not lone:
        if per_seed is not None:
            return [t for t in [seed_term(per_seed)] if t], [], ""
        return [t for t in (seed_term(sa.values), seed_term(sb.values)) if t], [], ""
    pool = lone[0].pool.get(choice)
    if pool is None:
        return [], [], refusal(lone[0])
    scale = 1.0 if a is b else 1.0 / len(sa.values) + 1.0 / len(sb.values)
    note = f"{lone[0].label}: one seed of a stochastic probe; {pool.describe()}"
    return [(pool.variance * scale, pool.df + 1)], [note], ""


def _delta_estimate(a: Arm, layers_a: list, b: Arm, layers_b: list, reps: Replicates,
                    sign: float, choice: str = "best"
                    ) -> tuple[Estimate | None, list[str], tuple[int, int], str]:
    """The paired difference a - b (sign-aware) with its item and seed variance, and why a
    verdict is refused ("" when it is not)."""
    sa, sb = a.scores(layers_a, reps), b.scores(layers_b, reps)
    notes = [*sa.notes, *sb.notes]
    n_items = _n_items(a, reps)
    counts = (len(sa.values), len(sb.values))
    if not sa.values.size or not sb.values.size:
        return None, notes + ["no defined seed"], counts, ""
    per_seed = None
    if a is b:  # best vs last of one arm: the seeds are paired, so is their seed variance
        common = [s for s in sa.seeds if s in sb.seeds]
        ia, ib = ([x.seeds.index(s) for s in common] for x in (sa, sb))
        per_seed = sign * (sa.values[ia] - sb.values[ib])
        value = float(per_seed.mean())
        reps_a = sa.replicates[ia] if sa.replicates is not None else None
        reps_b = sb.replicates[ib] if sb.replicates is not None else None
    else:
        value = sign * (sa.values.mean() - sb.values.mean())
        reps_a, reps_b = sa.replicates, sb.replicates
    terms, pooled, refused = _seed_terms(a, sa, b, sb, choice, per_seed)
    notes += pooled + ([refused] if refused else [])
    missing = [m for m in (sa.missing, sb.missing) if m]
    if missing or reps_a is None or reps_b is None:
        var_item = float("nan")
        notes += missing
    else:
        var_item = item_variance(sign * (reps_a.mean(axis=0) - reps_b.mean(axis=0)), n_items)
    n = int(n_items) if np.isfinite(n_items) else 0
    return Estimate(float(value), var_item, n, terms), notes, counts, refused


def compare(a: Arm, layers_a: list, b: Arm, layers_b: list, reps: Replicates,
            margin: float | None = None, choice: str = "best") -> dict:
    """One comparison: estimates, delta (gain of a over b), its interval, SE, df, the
    two-sided p, the equivalence (TOST) p and the non-superiority p against ``margin``, and
    the row's verdict. ``choice``: the layer choice (which borrowed seed variance applies).

    A refused verdict (one seed of a stochastic probe with nothing to borrow from) keeps the
    delta and its item-only interval, but no p-value: it takes part in no decision."""
    sign = 1.0 if higher_is_better(a.metric) else -1.0
    out = {"estimate_a": a.estimate(layers_a), "estimate_b": b.estimate(layers_b),
           "delta": np.nan, "ci_low": np.nan, "ci_high": np.nan, "se": np.nan, "df": np.nan,
           "p_value": np.nan, "p_equiv": np.nan, "p_not_better": np.nan, "margin": margin,
           "verdict": "unresolved",
           "n_items": _n_items(a, reps), "n_seeds_a": np.nan, "n_seeds_b": np.nan,
           "not_comparable": comparability(a, b, reps), "note": ""}
    if out["not_comparable"]:  # refused: the two numbers are shown, their difference is not
        out["verdict"] = "not comparable"
        return out
    est, notes, (out["n_seeds_a"], out["n_seeds_b"]), refused = _delta_estimate(
        a, layers_a, b, layers_b, reps, sign, choice)
    same_layers = a is b and layers_a == layers_b
    if same_layers:
        notes.append("best-validation and last layer are the same layer: no test")
    out["note"] = "; ".join(dict.fromkeys(notes))
    if est is None:
        return out
    out["delta"] = est.value
    if same_layers or not est.valid:
        return out
    out["ci_low"], out["ci_high"] = est.interval()
    out.update(se=est.se, df=est.df)
    if refused:
        return out
    out.update(p_value=est.p_value(), p_equiv=est.p_equivalence(margin),
               p_not_better=est.p_not_better(margin))
    out["verdict"] = verdict(out["delta"], out["p_value"], out["p_equiv"])
    return out
