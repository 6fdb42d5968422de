"""Intervals and paired comparisons from cells' predictions: values, pairing, seeds, Holm,
refusal of non-comparable cells, and cells without a predictions file."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from stats_fakes import protein_task, write_cell

from ptransfer.analysis.bootstrap import Replicates
from ptransfer.analysis.comparisons import Arm, compare
from ptransfer.analysis.predictions import PREDICTIONS_FILE
from ptransfer.analysis.summary import analyse

ONEHOT = {"model": "onehot", "family": "onehot", "n_params": 0, "n_layers": 1}


def _grid(root, n=300, ri_head="ridge", ri_precision="fp32", ri_fingerprint="fp",
          predictions=True):
    task = protein_task(n)
    frames = [write_cell(root, "t", task, lambda layer: 0.4 + 0.3 * layer)]
    for seed in range(3):
        frames.append(write_cell(root, "t", task, 0.3, ablation="random_init", seed=seed,
                                 head=ri_head, precision=ri_precision,
                                 fingerprint=ri_fingerprint, predictions=predictions))
    frames.append(write_cell(root, "t", task, 0.2, **ONEHOT))
    return pd.concat(frames, ignore_index=True)


def test_intervals_hold_the_seed_mean_and_the_counts(tmp_path):
    df = _grid(tmp_path)
    table = analyse(df, tmp_path).intervals.set_index(["arm", "layer_choice"])
    test = df[df["eval_set"] == "test"]
    ri = test[(test["ablation"] == "random_init") & test["best_layer"]]
    row = table.loc[("random_init", "best")]
    assert row["estimate"] == pytest.approx(ri["value"].mean())
    assert row["ci_low"] < row["estimate"] < row["ci_high"]
    assert (row["n_seeds"], row["n_items"], row["n_resamples"]) == (3, 300, 1000)
    assert "bootstrap" in row["method"] and row["level"] == 0.95
    last = table.loc[("pretrained", "last")]
    assert last["layers"] == "2"  # n_layers 3: the last layer is 2
    assert set(table.index) == {(a, c) for a in ("pretrained", "random_init", "onehot")
                                for c in ("best", "last")}


def test_comparisons_pairs_deltas_and_holm(tmp_path):
    table = analyse(_grid(tmp_path), tmp_path).comparisons
    pairs = set(zip(table["layer_choice"], table["a"], table["b"]))
    expected = {(c, a, b) for c in ("best", "last") for a, b in
                (("pretrained", "random_init"), ("pretrained", "onehot"),
                 ("random_init", "onehot"))}
    expected |= {("best vs last", f"{a} (best)", f"{a} (last)")
                 for a in ("pretrained", "random_init")}
    assert pairs == expected
    assert table["delta"].to_numpy() == pytest.approx(
        (table["estimate_a"] - table["estimate_b"]).to_numpy())
    # Holm by hand within each decision family; descriptive rows stay unadjusted
    decided = table[table["decision"] != ""]
    assert set(decided["decision"]) == {"transfer", "pretraining"}
    assert (decided["layer_choice"] == "best").all() and (decided["a"] == "pretrained").all()
    for _, family in decided.groupby("holm_family"):
        p = family["p_value"].to_numpy()
        order = np.argsort(p)
        running, expected_holm = 0.0, np.empty(len(p))
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (len(p) - rank) * p[i]))
            expected_holm[i] = running
        assert np.allclose(family["p_holm"], expected_holm)
    descriptive = table[table["decision"] == ""]
    assert descriptive["p_holm"].isna().all()
    assert (descriptive["holm_family"] == "not a decision row: p unadjusted").all()
    best = table[(table["layer_choice"] == "best") & (table["b"] == "onehot")
                 & (table["a"] == "pretrained")].iloc[0]
    assert best["ci_low"] > 0 and best["p_holm"] < 1e-3  # 0.4+0.6 signal vs 0.2: clear


def test_identical_predictions_give_a_zero_width_paired_interval(tmp_path):
    """Both arms scored on the same resampled items: identical predictions, delta 0 in
    every resample (independent resamples would give a wide interval)."""
    task = protein_task(200)
    frames = [write_cell(tmp_path, "t", task, 0.5, n_layers=1),
              write_cell(tmp_path, "t", task, 0.5, n_layers=1, ablation="random_init")]
    cells = sorted((tmp_path / "cells").iterdir())
    pretrained = next(c for c in cells if "-pretrained-" in c.name)
    ablated = next(c for c in cells if "-random_init-" in c.name)
    shutil.copy(pretrained / PREDICTIONS_FILE, ablated / PREDICTIONS_FILE)
    table = analyse(pd.concat(frames, ignore_index=True), tmp_path).comparisons
    row = table[(table["layer_choice"] == "best") & (table["b"] == "random_init")].iloc[0]
    assert row["ci_high"] - row["ci_low"] == 0.0 and row["se"] == 0.0


def test_seed_variation_widens_the_interval(tmp_path):
    task = protein_task(300)
    spread = {0: 0.1, 1: 0.6, 2: 1.2}  # seeds far apart compared with item noise
    frames = [write_cell(tmp_path, "t", task, spread[s], ablation="random_init", seed=s,
                         n_layers=1) for s in range(3)]
    frames.append(write_cell(tmp_path, "t", task, 0.6, n_layers=1))
    table = analyse(pd.concat(frames, ignore_index=True), tmp_path).intervals
    best = table[table["layer_choice"] == "best"].set_index("arm")
    width = best["ci_high"] - best["ci_low"]
    assert width["random_init"] > 2.5 * width["pretrained"]
    seed_values = pd.concat(frames).query("eval_set == 'test' and ablation == 'random_init'")
    low, high = best.loc["random_init", ["ci_low", "ci_high"]]
    assert low < seed_values["value"].mean() < high


@pytest.mark.parametrize(("field", "kwargs", "words"), [
    ("head", {"ri_head": "linear"}, "head differs (ridge vs linear)"),
    ("precision", {"ri_precision": "bf16"}, "precision differs (fp32 vs bf16)"),
    ("data_fingerprint", {"ri_fingerprint": "other"}, "data_fingerprint differs (fp vs other)"),
])
def test_cells_that_differ_are_never_compared(tmp_path, field, kwargs, words):
    table = analyse(_grid(tmp_path, **kwargs), tmp_path).comparisons
    refused = table[table["b"].eq("random_init") | table["a"].eq("random_init")]
    refused = refused[refused["layer_choice"] != "best vs last"]
    if field == "precision":  # extraction settings do not apply to one-hot: comparable
        against_onehot = refused[refused["b"] == "onehot"]
        assert len(against_onehot) == 2 and (against_onehot["not_comparable"] == "").all()
        refused = refused[refused["b"] != "onehot"]
    assert len(refused) == (2 if field == "precision" else 4)
    assert refused["not_comparable"].str.startswith(f"{field} differs").all()
    assert (refused.loc[refused["a"] == "pretrained", "not_comparable"] == words).all()
    assert refused[["delta", "ci_low", "p_value", "p_holm"]].isna().all().all()
    assert refused["estimate_a"].notna().all()  # both numbers shown, their difference not
    fine = table[(table["a"] == "pretrained") & (table["b"] == "onehot")]
    assert (fine["not_comparable"] == "").all() and fine["p_value"].notna().all()
    assert fine.loc[fine["layer_choice"] == "best", "p_holm"].notna().all()


def test_cells_without_predictions_get_nan_and_a_note(tmp_path):
    analysis = analyse(_grid(tmp_path, predictions=False), tmp_path)
    ri = analysis.intervals[analysis.intervals["arm"] == "random_init"]
    assert ri["ci_low"].isna().all()
    assert ri["note"].str.contains("no predictions.parquet").all()
    assert ri["estimate"].notna().all()
    pre = analysis.intervals[analysis.intervals["arm"] == "pretrained"]
    assert pre["ci_low"].notna().all()
    comp = analysis.comparisons
    ri_rows = comp[comp["b"] == "random_init"]
    assert ri_rows["p_value"].isna().all() and ri_rows["note"].str.contains("older cell").all()


def test_no_predictions_anywhere_is_not_an_error(tmp_path):
    analysis = analyse(_grid(tmp_path), None)
    assert analysis.intervals["ci_low"].isna().all()
    assert (analysis.taxonomy["class"] == "inconclusive").all()


def test_delta_is_a_gain_for_lower_is_better_metrics():
    """mse: delta = b - a, so a lower error of ``a`` is a positive delta; replicates too."""
    def arm(cell_id, value):
        key = {"task": "t", "eval_set": "test", "model": "m", "checkpoint": "final",
               "ablation": "pretrained", "ablation_scope": "full", "head": "ridge",
               "head_config": "h", "data_fingerprint": "fp", "precision": "fp32",
               "length_policy": "window", "pooled_dtype": "float32", "revision": "",
               "family": "esm2", "n_params": 1, "checkpoint_step": np.nan,
               "checkpoint_fraction": 1.0, "checkpoint_order": 0, "metric": "mse",
               "selection": "val"}
        cells = pd.DataFrame({"cell_id": [cell_id], "seed": [0], "n_layers": [1],
                              "best": [0], "last": [0]})
        return Arm(key, cells, {(cell_id, 0): value})

    reps = Replicates(n_resamples=4, seed=0)
    reps.values = {("a", "test", 0): np.array([1.0, 1.2, 0.8, 1.0]),
                   ("b", "test", 0): np.array([2.0, 2.1, 1.9, 2.0])}
    reps.items = {("a", "test"): np.arange(3), ("b", "test"): np.arange(3)}
    out = compare(arm("a", 1.0), [0], arm("b", 2.0), [0], reps)
    assert out["delta"] == pytest.approx(1.0)
    deltas = np.array([1.0, 0.9, 1.1, 1.0])
    se = np.std(deltas, ddof=1) * np.sqrt(3 / 2)  # bootstrap SE, small-sample expanded (n=3)
    assert out["se"] == pytest.approx(se) and out["df"] == pytest.approx(2.0)
    half = stats.t.ppf(0.975, 2) * se
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((1.0 - half, 1.0 + half))
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(1.0 / se, 2))


def test_holm_families_count_only_the_rows_that_take_part(tmp_path):
    """Defect 7: a refused row (another probe config) has no p-value and takes no part in
    its decision's Holm family: one comparable row is a family of one, its Holm p its raw
    p (the first rules said "(2 rows)" with a Holm p equal to the raw p)."""
    task = protein_task(300)
    frames = [write_cell(tmp_path, "t", task, 1.0, n_layers=1),
              write_cell(tmp_path, "t", task, 0.8, ablation="random_init", n_layers=1),
              write_cell(tmp_path, "t", task, 0.8, ablation="stat_transfer", n_layers=1,
                         head_config="other grid")]
    table = analyse(pd.concat(frames, ignore_index=True), tmp_path).comparisons
    rows = table[table["decision"] == "pretraining"].set_index("b")
    assert rows.loc["random_init", "holm_family"] == "pretraining: t/test/m/final (1 row)"
    assert rows.loc["random_init", "p_holm"] == rows.loc["random_init", "p_value"]
    assert rows.loc["stat_transfer", "verdict"] == "not comparable"
    assert rows.loc["stat_transfer", "holm_family"] == \
        "pretraining: t/test/m/final: takes no part (no p-value)"
    assert np.isnan(rows.loc["stat_transfer", "p_holm"])
