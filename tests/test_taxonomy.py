"""The taxonomy on known-truth cells (the project's file formats, simulated predictions):
each class, each defect of the first rules, and the decision rules by hand.

Quality q of a simulated predictor: predictions = q * y + unit noise, so its Spearman is
6/pi asin(rho/2) with rho = q / sqrt(1 + q^2): higher q, better. Checkpoints of one model
share 97 % of their noise variance (``noise_key``): probes on consecutive checkpoints of one
model make nearly the same errors, which is what makes a late step testable at 400 proteins.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stats_fakes import protein_task, residue_task, write_cell

from ptransfer.analysis.alignment import SPAN, AxisPlan, axis_verdict, combine
from ptransfer.analysis.decisions import decide
from ptransfer.analysis.repstat import repstat
from ptransfer.analysis.summary import analyse, summary_table
from ptransfer.analysis.taxonomy import (
    ALIGNED,
    INCONCLUSIVE,
    NO_BENEFIT,
    NOT_ALIGNED,
    NOT_FROM_PRETRAINING,
)

ONEHOT = {"model": "onehot", "family": "onehot", "n_params": 0, "n_layers": 1}
KEY = ["task", "eval_set", "model", "checkpoint"]


def _taxonomy(root, frames, **kwargs) -> pd.DataFrame:
    return analyse(pd.concat(frames, ignore_index=True), root, **kwargs).taxonomy.set_index(KEY)


def _baselines(root, task, ablation=0.2, onehot=0.3, seeds=(0, 1, 2), name="t",
               selection="val", **kwargs):
    """random_init and stat_transfer at ``seeds``, and the one-hot baseline."""
    frames = [write_cell(root, name, task, ablation, ablation=a, seed=s, selection=selection,
                         **kwargs) for a in ("random_init", "stat_transfer") for s in seeds]
    return frames + [write_cell(root, name, task, onehot, selection=selection, **ONEHOT)]


SHARED = 0.97


def _checkpoints(root, task, qualities, depth=lambda layer: 1.0, name="t", key="m", **kwargs):
    """Pretrained at len(qualities) checkpoints, steps 1000, 2000, ...; the last is final."""
    frames = []
    for k, q in enumerate(qualities):
        checkpoint = "final" if k == len(qualities) - 1 else f"step{k + 1}"
        frames.append(write_cell(root, name, task, lambda layer, q=q: q * depth(layer),
                                 checkpoint=checkpoint, step=1000.0 * (k + 1), noise_key=key,
                                 shared=SHARED, **kwargs))
    return frames


def test_rising_checkpoints_and_beating_every_baseline_is_aligned(tmp_path):
    task = protein_task(400)
    frames = _checkpoints(tmp_path, task, [0.5, 0.75, 1.0, 1.5, 2.0]) + _baselines(tmp_path, task)
    row = _taxonomy(tmp_path, frames).loc[("t", "test", "m", "final")]
    assert row["class"] == ALIGNED
    assert (row["transfer"], row["pretraining"], row["alignment"]) == \
        ("better", "better", "aligned")
    assert row["alignment_checkpoint"] == "aligned" and row["alignment_size"] == "absent"
    # final (step 5000) against every checkpoint at or before 2500
    assert "pretrained @ final vs pretrained @ step2: better" in row["evidence"]
    assert "pretrained @ final vs pretrained @ step1: better" in row["evidence"]
    assert "pretrained @ final vs pretrained @ step3" not in row["evidence"]
    assert "pretrained vs random_init: better" in row["evidence"]
    assert "pretrained vs onehot: better" in row["evidence"]
    assert row["trend_checkpoint"] == 1.0 and row["trend_checkpoint_points"] == 5


def test_a_decline_along_pretraining_is_not_aligned(tmp_path):
    task = protein_task(400)
    frames = _checkpoints(tmp_path, task, [3.0, 2.0, 1.0]) + _baselines(tmp_path, task)
    row = _taxonomy(tmp_path, frames).loc[("t", "test", "m", "final")]
    assert row["class"] == NOT_ALIGNED and row["alignment_checkpoint"] == "not aligned"
    assert "pretrained @ final vs pretrained @ step1: worse" in row["evidence"]
    assert row["trend_checkpoint"] == -1.0


def test_a_tie_at_8000_proteins_is_no_benefit(tmp_path):
    """Everything equal: "no benefit" no longer needs a baseline significantly better;
    equivalence within the margin (TOST) decides it."""
    task = protein_task(8000)
    frames = [write_cell(tmp_path, "t", task, 1.0, n_layers=1)]
    frames += _baselines(tmp_path, task, ablation=1.0, onehot=1.0, n_layers=1)
    row = _taxonomy(tmp_path, frames).loc[("t", "test", "m", "final")]
    assert row["class"] == NO_BENEFIT
    assert row["transfer"] == "equivalent" and row["pretraining"] == "equivalent"


def test_a_gain_of_0_025_at_8000_proteins_is_a_transfer_benefit(tmp_path):
    """+0.025 Spearman over one-hot at 8,000 proteins: outside the 0.02 margin and
    significantly above 0, so better (the margin is a test bound, not a threshold)."""
    task = protein_task(8000)
    truth = {q: 6 / np.pi * np.arcsin(q / np.sqrt(1 + q * q) / 2) for q in (1.0, 1.073)}
    assert truth[1.073] - truth[1.0] == pytest.approx(0.025, abs=0.001)
    frames = [write_cell(tmp_path, "t", task, 1.073, n_layers=1, noise_key="shared"),
              write_cell(tmp_path, "t", task, 1.0, noise_key="shared", **ONEHOT)]
    taxonomy = _taxonomy(tmp_path, frames)
    comparisons = analyse(pd.concat(frames, ignore_index=True), tmp_path).comparisons
    row = comparisons[comparisons["decision"] == "transfer"].iloc[0]
    assert 0.02 < row["delta"] < 0.03 and row["ci_low"] > 0
    assert taxonomy.loc[("t", "test", "m", "final"), "transfer"] == "better"


def test_beating_onehot_but_tying_the_ablations_is_a_benefit_not_from_pretraining(tmp_path):
    """Defect 4: a model that beats one-hot and ties both ablations was called a benefit of
    pretraining, "not aligned" (with an early plateau) or inconclusive (without an axis);
    the architecture or the weights' statistics explain it: its own class, whatever the
    axes say."""
    task = protein_task(8000)
    frames = [write_cell(tmp_path, "t", task, 1.0, n_layers=1)]
    frames += _baselines(tmp_path, task, ablation=1.0, onehot=0.3, n_layers=1)
    row = _taxonomy(tmp_path, frames).loc[("t", "test", "m", "final")]
    assert (row["transfer"], row["pretraining"]) == ("better", "equivalent")
    assert row["alignment"] == "unknown" and row["class"] == NOT_FROM_PRETRAINING
    # with an early plateau along pretraining (the old rules: "benefits, not aligned")
    root = tmp_path / "plateau"
    task = protein_task(8000, seed=1)
    frames = [write_cell(root, "t", task, q, checkpoint=c, step=s, n_layers=1,
                         noise_key="m", shared=SHARED)
              for c, s, q in (("step1", 1000.0, 1.0), ("final", 2000.0, 1.0))]
    frames += _baselines(root, task, ablation=1.0, onehot=0.3, n_layers=1)
    row = _taxonomy(root, frames).loc[("t", "test", "m", "final")]
    assert (row["transfer"], row["pretraining"], row["alignment"]) == \
        ("better", "equivalent", "not aligned")
    assert row["class"] == NOT_FROM_PRETRAINING


def test_opposite_trends_on_two_test_sets_keep_their_own_alignment(tmp_path):
    """ss3-like: one data fingerprint, two test sets; cb513 rises along checkpoints and size,
    casp12 falls. Each test set gets its own trends and verdicts."""
    task = protein_task(400, eval_sets=("val", "cb513", "casp12"))
    rising, falling = [0.5, 1.0, 2.0], [2.0, 1.0, 0.5]
    frames = []
    for k in range(3):
        checkpoint = "final" if k == 2 else f"step{k + 1}"
        quality = {"val": rising[k], "cb513": rising[k], "casp12": falling[k]}
        frames.append(write_cell(tmp_path, "ss", task, quality, checkpoint=checkpoint,
                                 step=1000.0 * (k + 1), noise_key="ckpt"))
    for q, size in ((0.3, 1), (0.6, 5)):  # two smaller models of the family
        quality = {"val": q, "cb513": q, "casp12": 3.0 - q}
        frames.append(write_cell(tmp_path, "ss", task, quality, model=f"small{size}",
                                 n_params=size))
    frames += _baselines(tmp_path, task, ablation=0.1, onehot=0.1, name="ss")
    table = _taxonomy(tmp_path, frames)
    cb513, casp12 = table.loc[("ss", "cb513", "m", "final")], table.loc[("ss", "casp12", "m",
                                                                         "final")]
    assert cb513["class"] == ALIGNED and cb513["trend_checkpoint"] == 1.0
    assert cb513["alignment_size"] == "aligned" and cb513["trend_size"] == 1.0
    assert casp12["class"] == NOT_ALIGNED and casp12["trend_checkpoint"] == -1.0
    assert casp12["alignment_checkpoint"] == "not aligned" and casp12["trend_size"] == -1.0
    assert "pretrained m vs pretrained small1" in cb513["evidence"]  # every smaller model
    assert "pretrained m vs pretrained small5" in cb513["evidence"]


@pytest.mark.parametrize("depth", [lambda layer: 1.0 - 0.3 * abs(layer - 2),  # inverted U
                                   lambda layer: 1.0 - 0.2 * abs(layer - 1)])  # peak at 1
def test_depth_is_described_never_decided(tmp_path, depth):
    """A best-in-the-middle depth profile with a rising checkpoint axis is aligned."""
    task = protein_task(400)
    frames = _checkpoints(tmp_path, task, [0.5, 1.0, 2.0], depth=depth, n_layers=5)
    frames += _baselines(tmp_path, task, n_layers=5)
    row = _taxonomy(tmp_path, frames).loc[("t", "test", "m", "final")]
    assert row["class"] == ALIGNED
    assert row["trend_depth_points"] == 5 and row["trend_depth_high"] < 1.0


def test_a_non_comparable_extra_arm_changes_nothing(tmp_path):
    task = protein_task(400)
    frames = _checkpoints(tmp_path, task, [0.5, 1.0, 2.0]) + _baselines(tmp_path, task)
    alone = _taxonomy(tmp_path, frames).loc[("t", "test", "m", "final")]
    extra = [write_cell(tmp_path, "t", task, 2.5, head="linear", **ONEHOT),
             write_cell(tmp_path, "t", task, 0.3, precision="bf16", **ONEHOT)]
    beside = _taxonomy(tmp_path, frames + extra).loc[("t", "test", "m", "final")]
    assert alone["class"] == beside["class"] == ALIGNED
    assert "onehot vs" not in beside["evidence"]  # the bf16 one-hot is the same baseline
    assert "not comparable (head differs (ridge vs linear))" in beside["evidence"]


def test_the_only_onehot_at_another_precision_is_still_the_baseline(tmp_path):
    task = protein_task(400)
    frames = _checkpoints(tmp_path, task, [0.5, 1.0, 2.0]) + [
        write_cell(tmp_path, "t", task, 0.2, ablation="random_init", seed=s) for s in range(2)]
    frames.append(write_cell(tmp_path, "t", task, 0.3, precision="bf16", **ONEHOT))
    row = _taxonomy(tmp_path, frames).loc[("t", "test", "m", "final")]
    assert row["transfer"] == "better" and row["class"] == ALIGNED


def test_the_class_does_not_depend_on_unrelated_tasks(tmp_path):
    """Holm families are one decision: the same cells give the same class, verdicts and
    adjusted p-values alone and beside 15 unrelated tasks."""
    task = protein_task(300)
    frames = _checkpoints(tmp_path, task, [0.8, 1.0, 1.25]) + _baselines(tmp_path, task,
                                                                        ablation=0.9)
    alone = analyse(pd.concat(frames, ignore_index=True), tmp_path)
    for k in range(15):
        other = protein_task(150, seed=100 + k)
        frames += [write_cell(tmp_path, f"u{k}", other, 0.3 + 0.05 * k),
                   write_cell(tmp_path, f"u{k}", other, 0.3, ablation="random_init"),
                   write_cell(tmp_path, f"u{k}", other, 0.4, **ONEHOT)]
    beside = analyse(pd.concat(frames, ignore_index=True), tmp_path)
    mine = (beside.comparisons["task"] == "t")
    pd.testing.assert_frame_equal(alone.comparisons.reset_index(drop=True),
                                  beside.comparisons[mine].reset_index(drop=True))
    key = ("t", "test", "m", "final")
    assert alone.taxonomy.set_index(KEY).loc[key, "class"] == \
        beside.taxonomy.set_index(KEY).loc[key, "class"]
    decided = beside.comparisons[mine & (beside.comparisons["decision"] != "")]
    assert (decided["holm_family"].str.split(": ").str[1].str.split(" ").str[0] ==
            "t/test/m/" + decided["checkpoint"]).all()  # one family per decision of one group


def test_a_scope_sweep_at_one_seed_collects(tmp_path):
    """ablation.scope=full,reference: pretrained and one-hot ran at seed 42 in both scopes
    (the same numbers); they are read once, and each scope's ablations get their own row."""
    task = protein_task(300)
    frames = []
    for scope in ("full", "reference"):
        frames += [write_cell(tmp_path, "t", task, 1.0, scope=scope, seed=42, noise_key="p"),
                   write_cell(tmp_path, "t", task, 0.3, scope=scope, seed=42, noise_key="o",
                              **ONEHOT)]
        frames += [write_cell(tmp_path, "t", task, 0.2 if scope == "full" else 0.8,
                              ablation="random_init", scope=scope, seed=s) for s in (0, 1)]
    df = pd.concat(frames, ignore_index=True)
    analysis = analyse(df, tmp_path)
    summary = summary_table(df, analysis).set_index("ablation_scope")
    assert sorted(summary.index) == ["full", "reference"]
    for scope, quality in (("full", 0.2), ("reference", 0.8)):
        row = summary.loc[scope]
        assert row["random_init_n_seeds"] == 2
        assert (row["random_init_best"] > 0.5) == (quality > 0.5)  # each scope its own arm
        assert row["random_init_best_ci_low"] < row["random_init_best"] < row[
            "random_init_best_ci_high"]
    assert summary.loc["full", "pretrained_best"] == summary.loc["reference", "pretrained_best"]
    labels = set(analysis.comparisons["b"])
    assert {"random_init", "random_init (reference)", "onehot"} <= labels


def test_scopes_at_different_seeds_are_never_pooled(tmp_path):
    task = protein_task(300)
    frames = [write_cell(tmp_path, "t", task, 1.0),
              write_cell(tmp_path, "t", task, 0.3, **ONEHOT)]
    frames += [write_cell(tmp_path, "t", task, 0.2, ablation="random_init", seed=s)
               for s in (0, 1)]
    frames += [write_cell(tmp_path, "t", task, 0.9, ablation="random_init", scope="reference",
                          seed=s) for s in (2, 3)]
    df = pd.concat(frames, ignore_index=True)
    summary = summary_table(df, analyse(df, tmp_path)).set_index("ablation_scope")
    paper_test = repstat(df).set_index("ablation_scope")
    for scope in ("full", "reference"):
        row = summary.loc[scope]
        assert row["random_init_best_ci_low"] < row["random_init_best"] < row[
            "random_init_best_ci_high"]
        assert paper_test.loc[scope, "best_random_init_mean"] == row["random_init_best"]


def test_missing_arms_and_axes_are_named(tmp_path):
    task = protein_task(200)
    frames = [write_cell(tmp_path, "t", task, 1.0),
              write_cell(tmp_path, "t", task, 0.2, ablation="random_init")]
    row = _taxonomy(tmp_path, frames).loc[("t", "test", "m", "final")]
    assert row["class"] == INCONCLUSIVE and row["transfer"] == "unresolved"
    assert "no one-hot baseline" in row["evidence"]
    frames = [write_cell(tmp_path / "b", "t", task, 0.2, ablation="random_init"),
              write_cell(tmp_path / "b", "t", task, 0.2, **ONEHOT)]
    row = _taxonomy(tmp_path / "b", frames).loc[("t", "test", "m", "final")]
    assert row["class"] == INCONCLUSIVE and "no pretrained arm" in row["evidence"]


def test_wide_intervals_stay_unresolved(tmp_path):
    task = residue_task(15)  # per residue, few proteins: wide protein-level intervals
    frames = [write_cell(tmp_path, "t", task, 0.70)] + _baselines(
        tmp_path, task, ablation=0.69, onehot=0.4, seeds=(0, 1))
    row = _taxonomy(tmp_path, frames).loc[("t", "test", "m", "final")]
    assert row["pretraining"] == "unresolved" and row["transfer"] == "better"
    assert "pretrained vs random_init: unresolved" in row["evidence"]


def test_checkpoint_axis_works_from_an_order_alone(tmp_path):
    """No steps, no fractions (a user's checkpoint files): the config order decides; four
    checkpoints in order -> the final is compared with the second (half of the order)."""
    task = protein_task(400)
    frames = []
    for k, (name, q) in enumerate([("a", 0.5), ("b", 0.8), ("c", 1.2), ("final", 2.0)]):
        frames.append(write_cell(tmp_path, "t", task, q, checkpoint=name, order=k,
                                 noise_key="m", shared=SHARED))
    frames += _baselines(tmp_path, task)
    row = _taxonomy(tmp_path, frames).loc[("t", "test", "m", "final")]
    assert row["class"] == ALIGNED
    assert "pretrained @ final vs pretrained @ b" in row["evidence"]


def test_checkpoint_axis_uses_pretraining_fractions(tmp_path):
    """The paper's CARP checkpoints: 1/8, 1/4, 1/2 of pretraining and final (fraction 1):
    the final is compared with the half-way checkpoint; a plateau from 1/4 on is not
    aligned."""
    task = protein_task(400)
    frames = [write_cell(tmp_path, "t", task, q, checkpoint=name, fraction=f, noise_key="c",
                         shared=SHARED)
              for name, f, q in [("eighth", 0.125, 0.8), ("quarter", 0.25, 1.5),
                                 ("half", 0.5, 1.5), ("final", np.nan, 1.5)]]
    frames += _baselines(tmp_path, task)
    row = _taxonomy(tmp_path, frames).loc[("t", "test", "m", "final")]
    assert "pretrained @ final vs pretrained @ half: equivalent" in row["evidence"]
    assert row["class"] == NOT_ALIGNED


def test_an_undefined_seed_is_a_note_not_a_silent_drop(tmp_path):
    task = protein_task(300)
    frames = [write_cell(tmp_path, "t", task, 1.0), write_cell(tmp_path, "t", task, 0.3,
                                                               **ONEHOT)]
    frames += [write_cell(tmp_path, "t", task, 0.2, ablation="random_init", seed=s,
                          constant=("test",) if s == 2 else ()) for s in range(3)]
    analysis = analyse(pd.concat(frames, ignore_index=True), tmp_path)
    ri = analysis.intervals[(analysis.intervals["arm"] == "random_init")
                            & (analysis.intervals["layer_choice"] == "best")].iloc[0]
    assert ri["n_seeds"] == 2 and ri["n_seeds_undefined"] == 1
    assert "random_init seed 2: spearman undefined" in ri["note"]
    comparison = analysis.comparisons[(analysis.comparisons["b"] == "random_init")
                                      & (analysis.comparisons["layer_choice"] == "best")].iloc[0]
    assert "random_init seed 2: spearman undefined" in comparison["note"]
    assert comparison["n_seeds_b"] == 2
    evidence = analysis.taxonomy.iloc[0]["evidence"]
    assert "random_init seed 2: spearman undefined" in evidence


@pytest.mark.parametrize(("setting", "value"), [("head_config", "other grid"),
                                                ("length_policy", "truncate"),
                                                ("pooled_dtype", "float16"),
                                                ("revision", "v2")])
def test_comparability_checks_every_setting(tmp_path, setting, value):
    task = protein_task(200)
    frames = [write_cell(tmp_path, "t", task, 1.0),
              write_cell(tmp_path, "t", task, 0.2, ablation="random_init", **{setting: value})]
    comparisons = analyse(pd.concat(frames, ignore_index=True), tmp_path).comparisons
    row = comparisons[comparisons["b"] == "random_init"].iloc[0]
    assert row["not_comparable"].startswith(f"{setting} differs")
    assert row["verdict"] == "not comparable" and np.isnan(row["delta"])


# ---------------------------------------------------------------- decision rules by hand


def _rows(*verdicts_and_holm) -> pd.DataFrame:
    """Comparison rows from (verdict, delta, p_holm, p_equiv_holm[, p_not_better_holm])."""
    rows = [dict(zip(["verdict", "delta", "p_holm", "p_equiv_holm", "p_not_better_holm"],
                     (*row, np.nan)[:5])) for row in verdicts_and_holm]
    return pd.DataFrame(rows, columns=["verdict", "delta", "p_holm", "p_equiv_holm",
                                       "p_not_better_holm"])


def test_decision_rules_intersection_union_and_holm():
    # every row better (each at 5 %, no adjustment: an intersection-union test)
    assert decide(_rows(("better", 0.1, 0.08, 1.0), ("better", 0.1, 0.04, 1.0))) == "better"
    assert decide(_rows(("equivalent", 0.0, 1, 0.01), ("equivalent", 0.0, 1, 0.02))) == \
        "equivalent"
    # "some row worse" is a union claim: decided after Holm
    assert decide(_rows(("better", 0.1, 0.01, 1), ("worse", -0.1, 0.03, 1))) == "worse"
    assert decide(_rows(("better", 0.1, 0.01, 1), ("worse", -0.1, 0.06, 1))) == "unresolved"
    assert decide(_rows(("better", 0.1, 0.01, 1), ("equivalent", 0.0, 1, 0.01))) == \
        "unresolved"
    assert decide(_rows(("not comparable", np.nan, np.nan, np.nan))) == "unresolved"


def test_axis_rules_by_hand():
    """aligned: better than every early point; not aligned: not better by the margin than
    some early point after Holm (the non-superiority p); the checkpoint axis decides."""
    plan = AxisPlan("checkpoint")
    assert axis_verdict(_rows(("better", 0.1, 0.01, 1, 1), ("better", 0.2, 0.01, 1, 1)),
                        plan) == "aligned"
    assert axis_verdict(_rows(("better", 0.1, 0.01, 1, 1), ("equivalent", 0, 1, 0.02, 0.02)),
                        plan) == "not aligned"
    assert axis_verdict(_rows(("better", 0.1, 0.01, 1, 1), ("unresolved", 0, 1, 0.07, 0.07)),
                        plan) == "unresolved"
    assert axis_verdict(_rows(), AxisPlan("checkpoint", state=SPAN)) == SPAN
    assert axis_verdict(_rows(("not comparable", np.nan, np.nan, np.nan)), plan) == "unresolved"
    assert combine("aligned", "not aligned") == (
        "aligned", "checkpoint axis aligned, size axis not aligned: the checkpoint axis decides")
    assert combine(SPAN, "not aligned") == ("not aligned", "")
    assert combine("unresolved", "absent") == ("unresolved", "")
    assert combine("absent", "absent") == ("unknown", "")


def test_auto_selection_decides_like_with_like_and_says_nothing_of_cross_pairings(tmp_path):
    """selection.method=auto: every arm has a validation- and a cv-selected cell. The cv
    pretrained arm is decided against the cv ablations and one-hot only; the val arms'
    pairings with it are descriptive, not refused rows inside the decision."""
    task = protein_task(400)
    frames = []
    for selection in ("val", "cv"):
        frames.append(write_cell(tmp_path, "t", task, 1.5, selection=selection))
        frames += _baselines(tmp_path, task, ablation=0.5, onehot=0.6, selection=selection)
    analysis = analyse(pd.concat(frames, ignore_index=True), tmp_path)
    row = analysis.taxonomy.set_index(KEY).loc[("t", "test", "m", "final")]
    assert (row["transfer"], row["pretraining"]) == ("better", "better")
    assert "not comparable" not in row["evidence"]
    decided = analysis.comparisons[analysis.comparisons["decision"].isin(
        ["pretraining", "transfer"])]
    assert len(decided) == 3 and (decided["not_comparable"].fillna("") == "").all()
