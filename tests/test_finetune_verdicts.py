"""The fine-tuning verdicts on known-truth cells (simulated predictions, the real formats):
fine-tuning gain and pretraining under fine-tuning, and the paper's classes left alone.

Quality q of a simulated predictor: predictions = q * y + unit noise, so a higher q has a
higher Spearman (see tests/test_taxonomy.py). A fine-tune cell is written as one: its last
layer only, head ``mlp``, a ``tune`` column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stats_fakes import protein_task, write_cell

from ptransfer.analysis.finetune_verdicts import finetune_verdicts
from ptransfer.analysis.summary import analyse, summary_table

ONEHOT = {"model": "onehot", "family": "onehot", "n_params": 0, "n_layers": 1}
KEY = ["task", "eval_set", "model", "checkpoint"]
SEEDS = (0, 1, 2)


SHARED = {"noise_key": "m", "shared": 0.998}  # arms of one model: nearly the same errors


def _frozen(root, task, pretrained=1.0, ablation=0.3, onehot=0.4):
    frames = [write_cell(root, "t", task, pretrained, **SHARED)]
    frames += [write_cell(root, "t", task, ablation, ablation="random_init", seed=s, **SHARED)
               for s in SEEDS]
    return frames + [write_cell(root, "t", task, onehot, **ONEHOT)]


def _tuned(root, task, mode, pretrained, scratch):
    frames = [write_cell(root, "t", task, pretrained, tune=mode, seed=s, **SHARED)
              for s in SEEDS]
    return frames + [write_cell(root, "t", task, scratch, tune=mode, ablation="random_init",
                                seed=s, **SHARED) for s in SEEDS]


def _analysis(root, frames):
    return analyse(pd.concat(frames, ignore_index=True), root)


def test_gain_and_pretraining_under_fine_tuning_from_known_qualities(tmp_path):
    """LoRA of pretrained weights far above the frozen probe and above LoRA from scratch:
    both better. Full fine-tuning of the same quality as the frozen probe and as its
    from-scratch arm (99.8 % of the noise shared, so seeds agree closely): equivalent within
    the 0.02 margin."""
    task = protein_task(600)
    frames = (_frozen(tmp_path, task) + _tuned(tmp_path, task, "lora", 3.0, 1.0)
              + _tuned(tmp_path, task, "full", 1.0, 1.0))
    analysis = _analysis(tmp_path, frames)
    row = analysis.taxonomy.set_index(KEY).loc[("t", "test", "m", "final")]
    assert row["finetune_gain"] == "lora=better, full=equivalent"
    assert row["pretraining_finetuned"] == "lora=better, full=equivalent"
    assert "pretrained lora vs pretrained frozen: +" in row["finetune_evidence"]
    tuned = analysis.comparisons[analysis.comparisons["decision"].isin(
        ["finetune_gain", "pretraining_finetuned"])]
    assert set(tuned["a"]) == {"pretrained lora", "pretrained full"}
    assert set(tuned["b"]) == {"pretrained frozen", "random_init lora", "random_init full"}
    assert (tuned["not_comparable"] == "").all()  # the head differs by design: allowed
    # each decision of each mode is its own Holm family
    assert tuned.groupby(["tune_config", "decision"])["holm_family"].nunique().eq(1).all()
    assert tuned["holm_family"].nunique() == 4
    # descriptive: from scratch vs frozen (Schmirler et al.'s comparison), p unadjusted
    scratch = analysis.comparisons[analysis.comparisons["a"] == "random_init lora"]
    assert set(scratch["b"]) == {"pretrained frozen", "random_init frozen"}
    assert (scratch["decision"] == "").all() and scratch["p_holm"].isna().all()


def test_the_papers_classes_and_summary_are_those_of_the_frozen_arms(tmp_path):
    task = protein_task(300)
    frozen = _frozen(tmp_path / "a", task)
    alone = _analysis(tmp_path / "a", frozen)
    tuned = _tuned(tmp_path / "a", task, "lora", 0.1, 3.0)  # a fine-tune far worse, and a
    both = _analysis(tmp_path / "a", frozen + tuned)        # scratch arm far better
    columns = list(alone.taxonomy.columns)
    pd.testing.assert_frame_equal(both.taxonomy[columns], alone.taxonomy)
    assert list(both.taxonomy.columns) == [*columns, "finetune_gain", "pretraining_finetuned",
                                           "finetune_evidence"]
    row = both.taxonomy.set_index(KEY).loc[("t", "test", "m", "final")]
    assert row["finetune_gain"] == "lora=worse" and row["pretraining_finetuned"] == "lora=worse"
    frozen_rows = pd.concat(frozen, ignore_index=True)
    pd.testing.assert_frame_equal(summary_table(pd.concat(frozen + tuned), both),
                                  summary_table(frozen_rows, alone))
    # the fine-tune arms' own numbers are in the intervals table
    intervals = both.intervals
    assert set(intervals.loc[intervals["head"] == "mlp", "ablation"]) == {"pretrained",
                                                                         "random_init"}


def test_a_group_without_the_arms_says_absent_and_no_fine_tunes_change_nothing(tmp_path):
    task = protein_task(200)
    frames = _frozen(tmp_path, task) + [write_cell(tmp_path, "t", task, 3.0, tune="full",
                                                   seed=s, **SHARED) for s in SEEDS]
    row = _analysis(tmp_path, frames).taxonomy.set_index(KEY).loc[("t", "test", "m", "final")]
    assert row["pretraining_finetuned"] == "full=absent"
    assert row["finetune_gain"] == "full=better"
    assert finetune_verdicts(pd.DataFrame()).empty


@pytest.mark.parametrize("drop_tune_column", [True, False])
def test_rows_without_a_tune_value_are_frozen(tmp_path, drop_tune_column):
    task = protein_task(100)
    frames = _frozen(tmp_path, task)
    df = pd.concat(frames, ignore_index=True)
    assert "tune" not in df.columns  # frozen cells' rows leave the column out
    df = df if drop_tune_column else df.assign(tune=np.nan)
    taxonomy = _analysis(tmp_path, [df]).taxonomy
    assert "finetune_gain" not in taxonomy.columns


def test_the_report_draws_frozen_probes_and_tables_the_fine_tunes(tmp_path, monkeypatch):
    from ptransfer.analysis import plots
    from ptransfer.analysis.collect import collect
    from ptransfer.analysis.report import make_report

    task = protein_task(100)
    _frozen(tmp_path, task)
    _tuned(tmp_path, task, "lora", 3.0, 2.0)
    collect(tmp_path, n_resamples=100)
    drawn = []
    original = plots.depth_figure
    monkeypatch.setattr(plots, "depth_figure",
                        lambda panel, *a, **k: drawn.append(panel) or original(panel, *a, **k))
    make_report(tmp_path / "results.csv", tmp_path / "report")
    curve = drawn[0]
    pretrained = curve[curve["ablation"] == "pretrained"].sort_values("layer")
    assert len(pretrained) == 3  # the frozen probe's three layers, no fine-tune point mixed in
    frozen_only = pd.read_csv(tmp_path / "results.csv").query("tune == 'frozen'")
    last = frozen_only.query("ablation == 'pretrained' and layer == 2 and eval_set == 'test' "
                             "and metric == 'spearman'")["value"].mean()
    assert pretrained["mean"].iloc[-1] == pytest.approx(last, rel=1e-12)
    taxonomy = pd.read_csv(tmp_path / "report" / "taxonomy.csv")
    assert taxonomy["finetune_gain"].str.startswith("lora=").all()


def test_the_gain_is_against_the_frozen_arm_the_decisions_use(tmp_path):
    """selection.method=auto writes a validation- and a cv-selected frozen arm: the fine-tune
    (epoch and learning rate chosen on validation) is decided against the cv arm, one row,
    comparable across heads and selections; the val arm's row is descriptive."""
    task = protein_task(600)
    frames = _frozen(tmp_path, task) + [
        write_cell(tmp_path, "t", task, 2.0, selection="cv", **SHARED)]
    frames += _tuned(tmp_path, task, "lora", 3.0, 1.0)
    comparisons = _analysis(tmp_path, frames).comparisons
    gain = comparisons[comparisons["decision"] == "finetune_gain"]
    assert len(gain) == 1 and gain["verdict"].iloc[0] == "better"
    assert gain["not_comparable"].fillna("").iloc[0] == ""
    described = comparisons[(comparisons["a"] == "pretrained lora")
                            & (comparisons["b"] == "pretrained frozen")
                            & (comparisons["decision"] == "")]
    assert len(described) == 1
