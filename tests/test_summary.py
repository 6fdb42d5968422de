"""Summary tables: hand-computed scores, classes without predictions, repstat vs scipy.

The taxonomy itself (from intervals, with predictions) is tested in test_taxonomy.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ptransfer.analysis.panels import final_checkpoint_of, main_test_rows
from ptransfer.analysis.repstat import one_sided_p, repstat
from ptransfer.analysis.rows import COLUMNS, make_frame
from ptransfer.analysis.summary import (
    classification_table,
    summary_table,
    to_markdown,
    write_tables,
)
from ptransfer.analysis.taxonomy import INCONCLUSIVE

# ------------------------------------------------------------------ synthetic grid
# name -> (family, n_params, n_layers, {checkpoint: step})
MODELS = {
    "esm2_t6_8M_UR50D": ("esm2", 7_840_000, 7, {"step_50k": 50_000.0, "final": 500_000.0}),
    "esm2_t12_35M_UR50D": ("esm2", 33_990_000, 13, {"final": 500_000.0}),
    "carp_600k": ("carp", 600_000, 5, {"final": np.nan}),
}
# task -> (main metric, other metric, eval sets)
TASKS = {
    "gb1_two_vs_rest": ("spearman", "pearson", ["val", "test"]),
    "ss3": ("accuracy", "macro_f1", ["val", "cb513", "ts115", "casp12"]),
}
SEEDS = {"pretrained": [0], "random_init": [0, 1, 2], "stat_transfer": [0, 1, 2]}
BASE = {"pretrained": 0.50, "random_init": 0.20, "stat_transfer": 0.25}
MODEL_OFFSET = {"esm2_t6_8M_UR50D": 0.0, "esm2_t12_35M_UR50D": 0.05, "carp_600k": 0.02}
SET_OFFSET = {"val": 0.03, "test": 0.0, "cb513": 0.10, "ts115": 0.12, "casp12": 0.05}
ONEHOT_SCORE = 0.30


def synthetic_value(model, checkpoint, ablation, seed, layer, n_layers, eval_set) -> float:
    """Pretrained peaks at mid depth (+0.2 at rel 0.5, 0 at both ends); ablations rise
    slowly with depth (+0.05 at the last layer) and by 0.01 per seed; the early
    checkpoint is 0.1 worse when pretrained."""
    rel = layer / (n_layers - 1)
    value = BASE[ablation] + MODEL_OFFSET[model] + SET_OFFSET[eval_set]
    if ablation == "pretrained":
        value += 0.2 * (1 - (2 * rel - 1) ** 2) - (0.1 if checkpoint == "step_50k" else 0.0)
    else:
        value += 0.05 * rel + 0.01 * seed
    return value


def _row(**fields) -> dict:
    row = {c: None for c in COLUMNS}
    row.update(dataset="synthetic", level="protein", head="ridge",
               hparams=json.dumps({"alpha": 1.0}), n_train=100, n_eval=20,
               cell_id="cell", config_hash="abc123", ptransfer_version="0.1.0")
    row.update(fields)
    row["cell_id"] = "-".join(str(row[k]) for k in ("task", "model", "checkpoint", "ablation",
                                                    "seed"))
    return row


def _cell_rows(model, family, n_params, ckpt, step, ablation, seed, task, n_layers, value_fn):
    """Rows of one cell: every layer x eval set x (main, other) metric; best layer on val."""
    main, other, eval_sets = TASKS[task]
    val_scores = [value_fn(layer, "val") for layer in range(n_layers)]
    best = int(np.argmax(val_scores))
    rows = []
    for layer in range(n_layers):
        for eval_set in eval_sets:
            value = value_fn(layer, eval_set)
            for metric, is_main in ((main, True), (other, False)):
                rows.append(_row(
                    model=model, family=family, n_params=n_params, checkpoint=ckpt,
                    checkpoint_step=step, ablation=ablation, seed=seed, task=task,
                    layer=layer, n_layers=n_layers,
                    rel_depth=layer / (n_layers - 1) if n_layers > 1 else 0.0,
                    eval_set=eval_set, metric=metric, main_metric=is_main,
                    value=value if is_main else value - 0.5, best_layer=layer == best))
    return rows


def synthetic_results(with_onehot: bool = True, tasks=tuple(TASKS)) -> pd.DataFrame:
    """The test grid: 2 tasks (ss3 with 3 test sets), 2 ESM-2 sizes + 1 CARP, 3 ablations
    (3 seeds for the two ablations), one-hot, and esm2_t6 at 2 checkpoints with steps."""
    rows = []
    for task in tasks:
        for model, (family, n_params, n_layers, ckpts) in MODELS.items():
            for ckpt, step in ckpts.items():
                for ablation, seeds in SEEDS.items():
                    for seed in seeds:
                        def value_fn(layer, eval_set, m=model, c=ckpt, a=ablation, s=seed,
                                     n=n_layers):
                            return synthetic_value(m, c, a, s, layer, n, eval_set)

                        rows += _cell_rows(model, family, n_params, ckpt, step, ablation,
                                           seed, task, n_layers, value_fn)
        if with_onehot:
            rows += _cell_rows("onehot", "onehot", 0, "final", np.nan, "pretrained", 0, task,
                               1, lambda layer, eval_set: ONEHOT_SCORE + SET_OFFSET[eval_set])
    return make_frame(rows)


# ------------------------------------------------------------------ one-panel cases


def panel_results(pretrained, random_init, stat_transfer=None, onehot=None,
                  metric="spearman") -> pd.DataFrame:
    """One task/test set, a 2-layer encoder whose layer 1 is flagged best; layer 0 scores 0.
    ``random_init`` / ``stat_transfer`` are lists of per-seed best-layer scores."""
    rows = []

    def add(model, family, ablation, seed, n_layers, best_value):
        for layer in range(n_layers):
            for eval_set in ("val", "test"):
                rows.append(_row(
                    model=model, family=family, n_params=10, checkpoint="final",
                    checkpoint_step=np.nan, ablation=ablation, seed=seed, task="t",
                    layer=layer, n_layers=n_layers, rel_depth=float(layer), eval_set=eval_set,
                    metric=metric, main_metric=True, best_layer=layer == n_layers - 1,
                    value=best_value if layer == n_layers - 1 else 0.0))

    add("m", "esm2", "pretrained", 0, 2, pretrained)
    for name, seeds in (("random_init", random_init), ("stat_transfer", stat_transfer)):
        for seed, value in enumerate(seeds or []):
            add("m", "esm2", name, seed, 2, value)
    if onehot is not None:
        add("onehot", "onehot", "pretrained", 0, 1, onehot)
    return make_frame(rows)


def _only_row(df: pd.DataFrame) -> pd.Series:
    table = summary_table(df)
    assert len(table) == 1
    return table.iloc[0]


# ------------------------------------------------------------------ summary values


def test_summary_hand_computed_cells():
    table = summary_table(synthetic_results()).set_index(
        ["task", "eval_set", "model", "checkpoint"])
    # 12 panels-x-models: gb1 (1 test set) + ss3 (3) = 4 panels x 4 (model, checkpoint)
    assert len(table) == 16
    gb1 = table.loc[("gb1_two_vs_rest", "test", "esm2_t6_8M_UR50D", "final")]
    # last layer: rel 1 -> no mid-depth bump; best layer (val argmax) is layer 3 of 7 (+0.2)
    assert gb1["pretrained_last"] == pytest.approx(0.50)
    assert gb1["pretrained_best"] == pytest.approx(0.70)
    assert gb1["pretrained_best_rel_depth"] == pytest.approx(0.5)
    # random_init seeds 0.25, 0.26, 0.27 at the last (= best) layer: mean 0.26, sd 0.01
    assert gb1["random_init_last"] == pytest.approx(0.26)
    assert gb1["random_init_best_sd"] == pytest.approx(0.01)
    assert gb1["stat_transfer_best"] == pytest.approx(0.31)
    assert gb1["random_init_n_seeds"] == 3 and gb1["pretrained_n_seeds"] == 1
    assert gb1["onehot_best"] == pytest.approx(0.30) and gb1["onehot_last"] == 0.30
    # no predictions.parquet beside these rows: no interval, so no decision, and it says why
    assert np.isnan(gb1["pretrained_best_ci_low"])
    assert gb1["classification"] == INCONCLUSIVE
    assert "no predictions.parquet" in gb1["evidence"]
    ts115 = table.loc[("ss3", "ts115", "esm2_t12_35M_UR50D", "final")]
    assert ts115["metric"] == "accuracy"
    assert ts115["pretrained_best"] == pytest.approx(0.50 + 0.05 + 0.12 + 0.2)
    assert ts115["stat_transfer_last"] == pytest.approx(0.25 + 0.05 + 0.12 + 0.05 + 0.01)
    early = table.loc[("ss3", "casp12", "esm2_t6_8M_UR50D", "step_50k")]
    assert early["pretrained_best"] == pytest.approx(0.50 + 0.05 + 0.2 - 0.1)
    assert early["checkpoint_step"] == 50_000


def test_summary_ignores_val_and_other_metrics():
    table = summary_table(synthetic_results())
    assert "val" not in set(table["eval_set"])
    assert set(table["metric"]) == {"spearman", "accuracy"}
    assert "onehot" not in set(table["model"])


def test_summary_without_onehot_names_what_is_missing():
    table = summary_table(synthetic_results(with_onehot=False))
    assert table["onehot_best"].isna().all()
    assert set(table["classification"]) == {INCONCLUSIVE}
    assert table["evidence"].str.contains("no one-hot baseline").all()


def test_classification_table_uses_final_checkpoint():
    classes = classification_table(summary_table(synthetic_results()))
    assert len(classes) == 4 * 3  # panels x models
    assert set(classes["checkpoint"]) == {"final"}


def test_final_checkpoint_rule():
    frame = pd.DataFrame({"model": ["a", "a", "b", "b", "c"],
                          "checkpoint": ["final", "s9", "s1", "s2", "only"],
                          "checkpoint_step": [np.nan, 9.0, 100.0, 20.0, np.nan]})
    assert final_checkpoint_of(frame) == {"a": "final", "b": "s1", "c": "only"}


# ------------------------------------------------------------------ repstat


def test_repstat_p_values_match_scipy():
    seeds_ri, seeds_st = [0.30, 0.31, 0.29], [0.66, 0.71, 0.69]
    table = repstat(panel_results(0.70, seeds_ri, seeds_st, onehot=0.40))
    assert len(table) == 1
    row = table.iloc[0]
    # hand: t = (0.30 - 0.70) / (0.01 / sqrt 3), df 2, one-sided lower tail
    t = (0.30 - 0.70) / (0.01 / np.sqrt(3))
    assert row["best_p_vs_random_init"] == pytest.approx(stats.t.cdf(t, df=2), rel=1e-9)
    expected = stats.ttest_1samp(seeds_st, 0.70, alternative="less").pvalue
    assert row["best_p_vs_stat_transfer"] == pytest.approx(expected, rel=1e-9)
    assert 0.05 < row["best_p_vs_stat_transfer"] < 1  # 0.70 within that seed spread
    assert row["best_gain_vs_random_init"] == pytest.approx(0.40)
    assert row["best_stat_transfer_sd"] == pytest.approx(np.std(seeds_st, ddof=1))
    assert row["best_gain_vs_onehot"] == pytest.approx(0.30)
    assert row["last_pretrained"] == pytest.approx(0.70)  # layer 1 is last and best here


def test_repstat_mse_uses_greater_alternative():
    seeds = [1.0, 1.2, 0.9]
    row = repstat(panel_results(0.8, seeds, onehot=1.5, metric="mse")).iloc[0]
    expected = stats.ttest_1samp(seeds, 0.8, alternative="greater").pvalue
    assert row["best_p_vs_random_init"] == pytest.approx(expected, rel=1e-9)
    assert row["best_gain_vs_random_init"] == pytest.approx(np.mean(seeds) - 0.8)
    assert row["best_gain_vs_onehot"] == pytest.approx(0.7)


def test_repstat_p_is_nan_with_one_seed():
    row = repstat(panel_results(0.7, [0.3], [0.2, 0.25], onehot=0.3)).iloc[0]
    assert np.isnan(row["best_p_vs_random_init"])
    assert np.isnan(row["best_random_init_sd"])
    assert np.isfinite(row["best_p_vs_stat_transfer"])
    assert np.isnan(one_sided_p(np.array([]), 0.5, "spearman"))


def test_repstat_p_is_nan_not_zero_when_seeds_do_not_vary():
    row = repstat(panel_results(0.7, [0.3, 0.3, 0.3], [0.9, 0.9], onehot=0.3)).iloc[0]
    assert np.isnan(row["best_p_vs_random_init"])  # scipy's limit would say p = 0
    assert np.isnan(row["best_p_vs_stat_transfer"])  # and p = 1 here
    assert np.isnan(one_sided_p(np.array([0.5, 0.5]), 0.5, "spearman"))
    assert one_sided_p(np.array([0.3, 0.31]), 0.7, "spearman") == pytest.approx(
        stats.ttest_1samp([0.3, 0.31], 0.7, alternative="less").pvalue)


def test_repstat_covers_every_model_checkpoint_panel():
    table = repstat(synthetic_results())
    assert len(table) == 16
    assert not table["best_p_vs_random_init"].isna().any()


# ------------------------------------------------------------------ bad input


def test_missing_column_is_named():
    df = synthetic_results().drop(columns=["best_layer"])
    with pytest.raises(ValueError, match="best_layer"):
        summary_table(df)


def test_duplicate_rows_are_an_error():
    df = panel_results(0.7, [0.3, 0.31], onehot=0.3)
    with pytest.raises(ValueError, match="collected twice"):
        summary_table(pd.concat([df, df], ignore_index=True))


def test_bad_boolean_names_column_and_row():
    df = panel_results(0.7, [0.3, 0.31], onehot=0.3)
    df["main_metric"] = df["main_metric"].astype(object)
    df.loc[3, "main_metric"] = "maybe"
    with pytest.raises(ValueError, match=r"'main_metric'.*row 3"):
        summary_table(df)


def test_two_flagged_best_layers_are_an_error():
    df = panel_results(0.7, [0.3, 0.31], onehot=0.3)
    df["best_layer"] = True
    with pytest.raises(ValueError, match="several best layers"):
        summary_table(df)


def test_layer_out_of_range_is_an_error():
    df = panel_results(0.7, [0.3, 0.31], onehot=0.3)
    df.loc[0, "layer"] = 5
    with pytest.raises(ValueError, match=r"row 0 \(0-based, header excluded\): layer 5"):
        summary_table(df)


def test_non_numeric_value_is_an_error():
    df = panel_results(0.7, [0.3, 0.31], onehot=0.3)
    df["value"] = df["value"].astype(object)
    df.loc[2, "value"] = "0.5x"
    with pytest.raises(ValueError, match=r"row 2 .*'value' is not a number: '0.5x'"):
        summary_table(df)


def test_two_main_metrics_for_a_task_is_an_error():
    df = pd.concat([panel_results(0.7, [0.3, 0.31], onehot=0.3),
                    panel_results(0.7, [0.3, 0.31], onehot=0.3, metric="pearson")],
                   ignore_index=True)
    with pytest.raises(ValueError, match="more than one main metric"):
        summary_table(df)


def test_no_test_rows_is_an_error():
    df = panel_results(0.7, [0.3, 0.31], onehot=0.3)
    with pytest.raises(ValueError, match="no main-metric rows on a test set"):
        summary_table(df[df["eval_set"] == "val"])


def test_undefined_values_are_left_out_of_the_mean_and_logged(caplog):
    df = panel_results(0.7, [0.3, 0.31, 0.32], onehot=0.3)
    bad = (df["ablation"] == "random_init") & (df["seed"] == 2) & (df["eval_set"] == "test")
    df.loc[bad, "value"] = np.nan
    row = _only_row(df)
    assert row["random_init_n_seeds"] == 2
    assert row["random_init_best"] == pytest.approx(0.305)
    assert "undefined value (NaN)" in caplog.text


# ------------------------------------------------------------------ writing


def test_write_tables(tmp_path):
    paths = write_tables(synthetic_results(tasks=("gb1_two_vs_rest",)), tmp_path / "out")
    assert [p.name for p in paths] == ["summary.csv", "summary.md", "repstat.csv",
                                       "intervals.csv", "comparisons.csv", "taxonomy.csv",
                                       "depth.csv"]
    summary = pd.read_csv(paths[0])
    assert len(summary) == 4 and summary["pretrained_best"].notna().all()
    markdown = paths[1].read_text()
    assert markdown.count("\n| gb1_two_vs_rest |") == 4
    assert "| 0.700 |" in markdown  # esm2_t6 final pretrained_best, rounded for reading
    assert "| 0.260 ± 0.010 |" in markdown  # its random_init best: mean ± sd over 3 seeds
    assert len(pd.read_csv(paths[2])) == 4
    intervals = pd.read_csv(paths[3])
    assert intervals["note"].str.contains("no predictions.parquet").all()
    assert len(pd.read_csv(paths[5])) == 4  # one class per (task, test set, model, checkpoint)
    depth = pd.read_csv(paths[6])  # one row per encoder arm; no predictions: the best layer
    assert len(depth) == 12 and (depth["shallowest_layer"] == depth["best_layers"]
                                 .astype(str).str.split().str[0].astype(int)).all()
    assert depth["note"].str.contains("no predictions.parquet").all()


def test_to_markdown_formats_and_escapes():
    frame = pd.DataFrame({"a": ["x|y", "z"], "b": [0.12345, np.nan]})
    assert to_markdown(frame) == "| a | b |\n|---|---|\n| x\\|y | 0.123 |\n| z |  |\n"


def test_main_test_rows_accepts_string_booleans():
    df = panel_results(0.7, [0.3, 0.31], onehot=0.3)
    df["best_layer"] = df["best_layer"].map({True: "True", False: "False"})
    assert main_test_rows(df)["best_layer"].dtype == bool


def test_one_hot_is_matched_on_selection_never_pooled_across_it():
    """selection.method=auto writes a validation-selected and a cross-validated one-hot cell
    for a small-validation task: each encoder row shows the one-hot of its own selection
    (pooling the two as if seeds gave their mean and a spurious sd)."""
    val = panel_results(0.5, [0.4], onehot=0.30)
    cv = panel_results(0.6, [0.45], onehot=0.36).assign(selection="cv")
    cv["cell_id"] = cv["cell_id"] + "__cv"
    table = summary_table(pd.concat([val.assign(selection="val"), cv], ignore_index=True))
    by_selection = table.set_index("selection")
    assert by_selection.loc["val", "onehot_best"] == pytest.approx(0.30)
    assert by_selection.loc["cv", "onehot_best"] == pytest.approx(0.36)
    assert table["onehot_best_sd"].isna().all()
