"""The taxonomy on hand-built tables: one per class, plus missing axes and missing arms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stats_fakes import protein_task, residue_task, write_cell

from ptransfer.analysis.summary import analyse
from ptransfer.analysis.taxonomy import (
    ALIGNED,
    INCONCLUSIVE,
    NO_BENEFIT,
    NOT_ALIGNED,
    alignment,
    trend,
)

ONEHOT = {"model": "onehot", "family": "onehot", "n_params": 0, "n_layers": 1}


def _classes(root, frames) -> pd.DataFrame:
    taxonomy = analyse(pd.concat(frames, ignore_index=True), root).taxonomy
    return taxonomy.set_index(["model", "checkpoint"])


def _baselines(root, task, ablation_quality=0.2, onehot_quality=0.2, **kwargs):
    return [*(write_cell(root, "t", task, ablation_quality, ablation="random_init", seed=s,
                         **kwargs) for s in range(2)),
            write_cell(root, "t", task, onehot_quality, **ONEHOT)]


def _checkpoints(root, task, qualities):
    """Pretrained at len(qualities) checkpoints; the last is "final"; depth rises."""
    frames = []
    for k, q in enumerate(qualities):
        name = "final" if k == len(qualities) - 1 else f"step{k}"
        frames.append(write_cell(root, "t", task, lambda layer, q=q: q * (0.6 + 0.2 * layer),
                                 checkpoint=name, step=1000.0 * (k + 1)))
    return frames


def test_benefits_and_aligned_on_the_checkpoint_axis(tmp_path):
    task = protein_task(400)
    frames = _checkpoints(tmp_path, task, [0.5, 1.0, 2.0]) + _baselines(tmp_path, task)
    row = _classes(tmp_path, frames).loc[("m", "final")]
    assert row["class"] == ALIGNED
    assert row["benefit"] == "yes" and row["alignment"] == "aligned"
    assert row["trend_checkpoint"] == 1.0 and row["trend_checkpoint_low"] > 0
    assert row["trend_depth_low"] > 0 and row["trend_checkpoint_points"] == 3
    assert "pretrained vs random_init: better" in row["evidence"]
    assert "checkpoint trend +1.00" in row["evidence"]


def test_benefits_not_aligned_when_more_pretraining_hurts(tmp_path):
    task = protein_task(400)
    frames = _checkpoints(tmp_path, task, [3.0, 1.5, 1.0]) + _baselines(tmp_path, task)
    row = _classes(tmp_path, frames).loc[("m", "final")]
    assert row["class"] == NOT_ALIGNED
    assert row["trend_checkpoint"] == -1.0 and row["trend_checkpoint_high"] < 0
    assert "falls" in row["evidence"]


def test_benefits_and_aligned_on_the_size_axis(tmp_path):
    task = protein_task(400)
    frames = [write_cell(tmp_path, "t", task, lambda layer, q=q: q * (0.6 + 0.2 * layer),
                         model=f"m{q}", n_params=int(1e6 * q)) for q in (0.5, 1.0, 2.0)]
    frames += _baselines(tmp_path, task, model="m2.0", n_params=int(2e6))
    row = _classes(tmp_path, frames).loc[("m2.0", "final")]
    assert row["class"] == ALIGNED and row["trend_size"] == 1.0
    assert row["trend_size_points"] == 3


def test_no_benefit_when_a_baseline_is_better(tmp_path):
    task = protein_task(400)
    frames = [write_cell(tmp_path, "t", task, 0.3)] + _baselines(
        tmp_path, task, ablation_quality=0.3, onehot_quality=1.5)
    row = _classes(tmp_path, frames).loc[("m", "final")]
    assert row["class"] == NO_BENEFIT and row["benefit"] == "no"
    assert "pretrained vs onehot: worse" in row["evidence"]


def test_inconclusive_when_the_intervals_do_not_decide(tmp_path):
    task = residue_task(15)  # per residue, few proteins: wide protein-level intervals
    frames = [write_cell(tmp_path, "t", task, 0.70)] + _baselines(
        tmp_path, task, ablation_quality=0.69, onehot_quality=0.4)
    row = _classes(tmp_path, frames).loc[("m", "final")]
    assert row["class"] == INCONCLUSIVE and row["benefit"] == "unresolved"
    assert "pretrained vs random_init: unresolved" in row["evidence"]
    assert "pretrained vs onehot: better" in row["evidence"]


def test_missing_axis_is_said_not_guessed(tmp_path):
    task = protein_task(400)
    frames = [write_cell(tmp_path, "t", task, lambda layer: 0.8 + 0.4 * layer)]
    frames += _baselines(tmp_path, task)
    row = _classes(tmp_path, frames).loc[("m", "final")]
    assert row["class"] == INCONCLUSIVE and row["benefit"] == "yes"
    assert "alignment unknown: no checkpoint or size axis in these results" in row["evidence"]
    assert np.isnan(row["trend_checkpoint"]) and row["trend_depth"] == 1.0


def test_missing_arms_are_named(tmp_path):
    task = protein_task(200)
    frames = [write_cell(tmp_path, "t", task, 1.0),
              write_cell(tmp_path, "t", task, 0.2, ablation="random_init")]
    row = _classes(tmp_path, frames).loc[("m", "final")]
    assert row["class"] == INCONCLUSIVE and "no one-hot baseline" in row["evidence"]
    frames = [write_cell(tmp_path / "b", "t", task, 0.2, ablation="random_init"),
              write_cell(tmp_path / "b", "t", task, 0.2, **ONEHOT)]
    row = _classes(tmp_path / "b", frames).loc[("m", "final")]
    assert row["class"] == INCONCLUSIVE and "no pretrained arm" in row["evidence"]


def test_trend_is_sign_aware_and_alignment_rules():
    x = np.array([1.0, 2.0, 3.0])
    rising = np.array([[0.1] * 4, [0.2] * 4, [0.3] * 4])
    assert trend(x, rising[:, 0], rising, "spearman") == pytest.approx((1.0, 1.0, 1.0))
    assert trend(x, rising[:, 0], rising, "mse") == pytest.approx((-1.0, -1.0, -1.0))

    def axis(name, low, high):
        return {f"trend_{name}": 0.5, f"trend_{name}_low": low, f"trend_{name}_high": high,
                f"trend_{name}_points": 3, "why": ""}

    absent = {"trend_size": np.nan, "trend_size_low": np.nan, "trend_size_high": np.nan,
              "trend_size_points": 1, "why": "absent"}
    assert alignment({"depth": axis("depth", 0.2, 1.0), "size": absent})[0] == "unknown"
    assert alignment({"depth": axis("depth", 0.2, 1), "size": axis("size", 0.1, 1)})[0] \
        == "aligned"
    assert alignment({"depth": axis("depth", -1, -0.1), "size": axis("size", 0.1, 1)})[0] \
        == "not aligned"
    word, sentence = alignment({"depth": axis("depth", 0.2, 1), "size": axis("size", -0.5, 1)})
    assert word == "unknown" and sentence.startswith("alignment unresolved")
