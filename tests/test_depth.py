"""Depth, described (issue 24): per arm the shallowest layer as good as the best, chosen on
validation and reported on test; collect's summary line; and the warning of a validation
set too small for a stable selection (defect 6). Known-truth cells in the project's file
formats (``stats_fakes``): a layer's predictions are quality(layer) * y + noise, the noise
shared across the layers of one cell by ``shared`` (layers of one encoder make correlated
errors)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stats_fakes import protein_task, write_cell

from ptransfer.analysis.collect import collect
from ptransfer.analysis.depth import depth_line
from ptransfer.analysis.selection import MIN_VALIDATION_ITEMS
from ptransfer.analysis.summary import analyse, summary_table

ONEHOT = {"model": "onehot", "family": "onehot", "n_params": 0, "n_layers": 1}
PLATEAU = [0.3, 0.8, 1.5, 1.5, 1.5, 1.2]  # layers 2-4 equally good, the last worse


def _depth_row(root, profile, n=400, seed=0, **kwargs) -> pd.Series:
    task = protein_task(n, seed=seed)
    frames = [write_cell(root, "t", task, lambda layer: profile[layer], seed=seed,
                         n_layers=len(profile), noise_key=f"d{seed}", shared=0.97, **kwargs),
              write_cell(root, "t", task, 0.2, seed=seed, **ONEHOT)]
    depth = analyse(pd.concat(frames, ignore_index=True), root).depth
    return depth[depth["ablation"] == "pretrained"].iloc[0]


def test_the_shallowest_layer_as_good_as_the_best_is_found_on_validation(tmp_path):
    """Layers 2, 3, 4 of 0..5 are equally good: whichever of them validation picks as best,
    layer 2 is the shallowest equivalent one (layer 1 is clearly worse), in >= 9 of 10
    replications; it is reported on test with its interval and its paired difference from
    the best layer, an interval around 0."""
    rows = [_depth_row(tmp_path / f"r{rep}", PLATEAU, seed=rep) for rep in range(10)]
    assert sum(r["shallowest_layer"] == 2 for r in rows) >= 9, \
        [r["shallowest_layer"] for r in rows]
    for row in rows:
        assert int(row["best_layers"]) in (2, 3, 4) and not row["best_is_last"]
        assert row["shallowest_rel_depth"] == row["shallowest_layer"] / 5
        assert row["ci_low"] < row["estimate"] < row["ci_high"]
        if row["shallowest_layer"] != int(row["best_layers"]):
            assert row["val_p_equiv"] < 0.05 and abs(row["val_delta"]) < 0.02
            assert row["delta_ci_low"] < 0 < row["delta_ci_high"]


def test_a_rising_profile_has_its_best_and_shallowest_layer_last(tmp_path):
    row = _depth_row(tmp_path, [0.2, 0.4, 0.7, 1.0, 1.5])
    assert row["best_is_last"] and row["shallowest_layer"] == 4
    assert row["shallowest_rel_depth"] == 1.0 and row["delta"] == 0.0


def test_collect_prints_where_the_best_and_the_shallowest_layers_sit(tmp_path, capsys):
    """The summary line over (model, task, test set) groups: two tasks with a middle
    plateau (best not last, shallowest at 2/5) and one rising task (best last, 4/4)."""
    for k, (profile, name) in enumerate([(PLATEAU, "a"), (PLATEAU, "b"),
                                         ([0.2, 0.4, 0.7, 1.0, 1.5], "c")]):
        task = protein_task(400, seed=k)
        write_cell(tmp_path, name, task, lambda layer, p=profile: p[layer],
                   n_layers=len(profile), noise_key=f"n{k}", shared=0.97)
    done = collect(tmp_path, n_resamples=300)
    assert done.depth_line == (
        "depth: the best layer is not the last in 2 of 3 (model, task, test set) groups; "
        "the shallowest layer as good as the best (within the margin, on validation) sits "
        "at a median 0.40 of the depth")
    depth = pd.read_csv(tmp_path / "depth.csv")
    assert sorted(depth["shallowest_layer"]) == [2, 2, 4]
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("task")
    assert summary.loc["c", "pretrained_shallowest_rel_depth"] == 1.0


def test_the_depth_line_counts_one_row_per_model_task_and_test_set():
    depth = pd.DataFrame({
        "model": ["m", "m", "m", "m"], "task": ["t"] * 4, "eval_set": ["test"] * 4,
        "checkpoint": ["final", "final", "early", "final"],
        "ablation": ["pretrained", "pretrained", "pretrained", "random_init"],
        "precision": ["bf16", "fp32", "fp32", "fp32"], "best_is_last": [True, False, True, True],
        "shallowest_rel_depth": [1.0, 0.25, 1.0, 1.0]})
    line = depth_line(depth, {"m": "final"})
    assert "not the last in 1 of 1" in line and "median 0.25" in line  # fp32, final only


@pytest.mark.parametrize(("n_val", "warned"), [(43, True), (MIN_VALIDATION_ITEMS, False)])
def test_a_small_validation_set_is_flagged(tmp_path, n_val, warned):
    """Defect 6: GB1 two_vs_rest validates on 43 proteins; the summary's warning column and
    the evidence now say that the selection on it is unstable (nothing did before)."""
    task = protein_task(400, sizes={"val": n_val})
    frames = [write_cell(tmp_path, "t", task, lambda layer: [0.5, 1.0][layer], n_layers=2),
              write_cell(tmp_path, "t", task, 0.2, **ONEHOT)]
    df = pd.concat(frames, ignore_index=True)
    analysis = analyse(df, tmp_path)
    summary = summary_table(df, analysis).iloc[0]
    words = f"t validates on {n_val} proteins (< {MIN_VALIDATION_ITEMS})"
    assert (words in summary["warning"]) == warned
    assert (words in analysis.taxonomy.iloc[0]["evidence"]) == warned
    if warned:
        assert "selection.method=cv" in summary["warning"]
    # rows that say they were selected by cross-validation are not warned about
    analysis = analyse(df.assign(selection="cv"), tmp_path)
    assert not analysis.warnings and np.all(analysis.taxonomy["evidence"].str.find(words) < 0)


def test_a_cross_validated_selection_is_decided_on_beside_the_validation_one(tmp_path):
    """Both selections reported (selection.method=cv cells beside validation-selected ones):
    the summary has a row for each; the decisions use the cross-validated one (here the
    validation-selected pretrained cell is worse than one-hot, the cross-validated one
    better), and the warning says so."""
    task = protein_task(400, sizes={"val": 43})
    val = [write_cell(tmp_path, "t", task, 0.1, name="pre-val"),
           write_cell(tmp_path, "t", task, 0.5, name="oh-val", **ONEHOT)]
    cv = [write_cell(tmp_path, "t", task, 1.5, name="pre-cv"),
          write_cell(tmp_path, "t", task, 0.5, name="oh-cv", **ONEHOT)]
    df = pd.concat([*val, *(f.assign(selection="cv") for f in cv)], ignore_index=True)
    analysis = analyse(df, tmp_path)
    row = analysis.taxonomy.iloc[0]
    assert row["transfer"] == "better"
    assert "the decisions use the cells selected by cross-validation" in row["evidence"]
    summary = summary_table(df, analysis).set_index("selection")
    assert sorted(summary.index) == ["cv", "val"]
    assert summary.loc["cv", "pretrained_best"] > summary.loc["val", "pretrained_best"]
