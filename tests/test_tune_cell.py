"""Fine-tune cells (``tune=lora|full``) through Hydra: the frozen cells' files and schema at
the last layer, keys that leave frozen cells alone, resume after a kill, the design rules,
the refusals, and the plan's phase, memory and GPU time."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from cell_helpers import CONF, cell_config
from omegaconf import OmegaConf

from ptransfer.analysis.rows import COLUMNS, OPTIONAL_COLUMNS
from ptransfer.cell.key import cell_key, effective_config, is_done
from ptransfer.cell.run import run_cell
from ptransfer.cell.spec import cell_spec
from ptransfer.cell.tune import PROGRESS_FILE, check_tune_memory
from ptransfer.sweep.design import excluded_reason
from ptransfer.sweep.plan import plan_cells, plan_totals

SMALL = ("task=synthetic", "task.n_variants=60", "tune.max_epochs=2",
         "tune.learning_rates=[1e-3]", "tune.toks_per_batch=256")


def _config(results, *overrides, tiny="esm2", weights=None):
    cfg = cell_config(results, *SMALL, *overrides, tiny=tiny)
    if weights is not None:
        cfg.model.weights = str(weights)  # the tiny model's file, in fair-esm's format
    return cfg


def _run(results, *overrides, tiny="esm2", weights=None):
    cfg = _config(results, *overrides, tiny=tiny, weights=weights)
    frame = run_cell(cfg)
    return cfg, frame, cell_key(cell_spec(cfg))


def test_a_fine_tune_cell_writes_the_frozen_schema_at_the_last_layer(tmp_path, tiny_esm2_path):
    cfg, frame, key = _run(tmp_path, "tune=lora", weights=tiny_esm2_path)
    assert key.cell_id.startswith("synthetic__esm2_t2_tiny_UR50D__final__pretrained__lora__s42__")
    rows = pd.read_csv(key.dir / "rows.csv")
    assert list(rows.columns) == [*COLUMNS, "tune"]  # its optional column, last
    assert set(rows["tune"]) == {"lora"} and set(rows["head"]) == {"mlp"}
    assert set(rows["layer"]) == {2} and set(rows["n_layers"]) == {3} and rows["best_layer"].all()
    assert set(rows["eval_set"]) == {"val", "test"}
    assert set(rows["metric"]) == {"spearman", "pearson", "mse", "ndcg"}
    assert json.loads(rows["hparams"].iloc[0]) == {"lr": 1e-3, "epoch": json.loads(
        rows["hparams"].iloc[0])["epoch"]}
    assert rows["n_train"].iloc[0] == 42  # 70 % of 60 variants
    predictions = pd.read_parquet(key.dir / "predictions.parquet")
    assert set(predictions["layer"]) == {2} and len(predictions) == 9 + 9
    status = json.loads((key.dir / "status.json").read_text())
    assert status["state"] == "done" and status["model_loaded"] is True
    assert not (key.dir / PROGRESS_FILE).exists()  # removed once the cell is done
    assert is_done(key)
    # the rows' values are the predictions' metrics (a probe's scoring)
    from ptransfer.metrics import spearman

    test = predictions[predictions["eval_set"] == "test"]
    value = rows[(rows.eval_set == "test") & (rows.metric == "spearman")]["value"].iloc[0]
    assert value == pytest.approx(spearman(test["y_true"], test["y_pred"]), rel=1e-12)


def test_tune_settings_key_fine_tune_cells_and_never_frozen_ones(tmp_path):
    frozen = cell_spec(cell_config(tmp_path, "task=synthetic", tiny="esm2"))
    assert "tune" not in effective_config(frozen, "fp")  # today's keys, unchanged
    assert frozen.name == "synthetic__esm2_t2_tiny_UR50D__final__pretrained__s42"
    lora = cell_spec(cell_config(tmp_path, "task=synthetic", "tune=lora", tiny="esm2"))
    rank4 = cell_spec(cell_config(tmp_path, "task=synthetic", "tune=lora", "tune.lora_r=4",
                                  tiny="esm2"))
    probe = cell_spec(cell_config(tmp_path, "task=synthetic", "tune=lora",
                                  "head.ridge.alphas=[1.0]", tiny="esm2"))
    keys = [cell_key(s, "fp").cell_id for s in (frozen, lora, rank4, probe)]
    assert len(set(keys[:3])) == 3  # frozen, lora r 8, lora r 4: three cells
    assert keys[3] == keys[1]  # the probes' grid means nothing to a fine-tune
    assert effective_config(lora, "fp")["tune"]["lora_r"] == 8
    assert not lora.reads_store and lora.loads_model and frozen.reads_store


def test_a_killed_fine_tune_cell_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    # random init: no weights file, and the seeded ablation is part of what must repeat
    _, reference, _ = _run(tmp_path / "a", "tune=full", "tune.max_epochs=3",
                           "ablation=random_init")
    from ptransfer.cell.task_data import load_task
    from ptransfer.embed.batching import Batching
    from ptransfer.tune.data import make_batches

    cfg = _config(tmp_path / "b", "tune=full", "tune.max_epochs=3", "ablation=random_init")
    train = load_task(cell_spec(cfg).task, tmp_path).splits["train"]
    per_epoch = len(make_batches(train, Batching(256, cfg.model.max_len)))
    step, calls = torch.optim.AdamW.step, []

    def dying(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == per_epoch + 2:  # two steps into the second epoch
            raise RuntimeError("killed")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", dying)
    with pytest.raises(RuntimeError, match="killed"):
        run_cell(cfg)
    key = cell_key(cell_spec(cfg))
    assert (key.dir / PROGRESS_FILE).is_file() and not is_done(key)
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    resumed = run_cell(cfg)
    columns = ["eval_set", "metric", "value", "hparams"]
    pd.testing.assert_frame_equal(resumed[columns], reference[columns])


def test_lora_on_carp_and_fine_tuning_one_hot_are_refused_before_anything_runs(tmp_path):
    cfg = cell_config(tmp_path, *SMALL, "tune=lora", tiny="carp")
    with pytest.raises(ValueError, match=r"^tune=lora is not defined for model=carp_tiny: CARP"):
        run_cell(cfg)
    assert not (tmp_path / "cells").exists()
    cfg = cell_config(tmp_path, *SMALL, "tune=full", "model=onehot")
    with pytest.raises(ValueError, match=r"^tune=full needs a torch model; model=onehot"):
        run_cell(cfg)


def test_the_design_runs_fine_tunes_of_pretrained_weights_at_every_seed(tmp_path):
    def reason(*overrides, tiny=None):
        cfg = cell_config(tmp_path, "task=synthetic", *overrides, tiny=tiny)
        return excluded_reason(cfg)

    assert "runs once, at seed 42" in reason("seed=0", tiny="esm2")
    assert reason("seed=0", "tune=lora", tiny="esm2") is None
    assert reason("seed=0", "tune=full", "ablation=random_init", tiny="esm2") is None
    assert reason("tune=lora", "model=onehot").startswith("tune=lora needs a torch model")
    assert reason("tune=lora", tiny="carp").startswith("tune=lora is not defined")
    assert reason("tune=full", tiny="carp") is None


def test_bad_tune_values_are_config_errors(tmp_path):
    from ptransfer.cell.config_checks import ConfigError, precheck

    with pytest.raises(ConfigError, match=r"^tune.patience=0: must be > 0$"):
        precheck(CONF, [f"results_dir={tmp_path}", "tune=full", "tune.patience=0"])
    with pytest.raises(ConfigError, match=r"^tune.max_epochs='many': expected an integer$"):
        precheck(CONF, [f"results_dir={tmp_path}", "tune=lora", "tune.max_epochs=many"])


def test_memory_refusal_names_what_shrinks_it(tmp_path, monkeypatch):
    import ptransfer.cell.tune as tune_cell
    from ptransfer.cell.task_data import load_task

    cfg = cell_config(tmp_path, *SMALL, "tune=full", tiny="esm2")
    spec = cell_spec(cfg)
    task = load_task(spec.task, spec.results_dir)
    estimate = check_tune_memory(spec, task, "cpu")
    monkeypatch.setattr(tune_cell, "device_memory", lambda device: estimate.total_bytes / 2)
    with pytest.raises(MemoryError, match=r"fine-tune memory .* but only .* free on cpu; "
                                          r"lower tune.toks_per_batch .*tune.gradient_checkpointing"):
        check_tune_memory(spec, task, "cpu")


def test_plan_puts_fine_tunes_in_phase_one_with_their_gpu_time(tmp_path):
    # synthetic: 600 variants of 40 residues, 420 / 90 / 90; ESM-2 8M (7,512,474 parameters)
    # trained from scratch: 2 learning rates x 20 epochs (the defaults)
    cells = plan_cells(CONF, ["task=synthetic", "model=esm2_t6_8M_UR50D", "ablation=random_init",
                              "tune=full", "seed=0,1", f"results_dir={tmp_path / 'res'}"])
    sweep = cells.sweep
    assert [c.phase for c in sweep.cells] == [1, 1] and not sweep.stores
    totals = plan_totals(cells)
    n, tokens = 7_512_474, 42
    flops = 2 * 20 * (6 * n * 420 * tokens + 2 * n * 90 * tokens) + 2 * 2 * n * 180 * tokens
    assert totals["gpu_seconds"] == pytest.approx(2 * flops / 100e12, rel=1e-12)
    assert totals["disk_bytes"] == 0.0
    assert all(c.memory.startswith("fine-tune memory ~") for c in cells)
    rows = [c for c in cells if c.memory]
    assert "GPU-min at 100 effective TFLOP/s" in rows[0].memory


def test_frozen_rows_leave_the_tune_column_out(tmp_path):
    assert OPTIONAL_COLUMNS["tune"] == "frozen"
    _, frame, key = _run(tmp_path, "ablation=random_init", "head=ridge")  # a frozen cell
    assert "tune" not in pd.read_csv(key.dir / "rows.csv").columns
    assert list(frame.columns) == list(COLUMNS)
    assert OmegaConf.load(CONF / "tune" / "frozen.yaml")["mode"] == "frozen"


def test_a_multirun_of_frozen_and_fine_tune_cells_collects_their_verdicts(tmp_path,
                                                                         tiny_esm2_path):
    """``ptransfer run -m`` through Hydra and the two-phase sweeper: fine-tune cells run as
    phase-1 jobs beside the store extraction, frozen cells read the store; ``collect`` then
    writes the fine-tuning verdict columns."""
    import shutil

    from cli_helpers import check, ptransfer
    from tiny_models import regression_path, tiny_esm2_searchpath

    hub = tmp_path / ".torch" / "hub" / "checkpoints"  # the CLI's TORCH_HOME (cli_helpers)
    hub.mkdir(parents=True)
    for source in (tiny_esm2_path, regression_path(tiny_esm2_path)):
        shutil.copy(source, hub / source.name.replace("esm2_t2_tiny_UR50D", "tiny_esm2"))
    out = check(ptransfer(
        "run", "-m", tiny_esm2_searchpath(tmp_path), "task=synthetic", "task.n_variants=60",
        "model=tiny_esm2", "ablation=pretrained,random_init", "tune=frozen,full", "seed=0,1",
        "grid.deterministic_seed=0", "tune.max_epochs=2", "tune.learning_rates=[1e-3]",
        "results_dir=res", "extract.progress=false", cwd=tmp_path))
    # GPU jobs: a shard per store (the 3 frozen arms' encoders) and the 4 fine-tunes; CPU
    # jobs: the 3 frozen cells read their stores
    assert "dispatch: 7 GPU job(s) on 1 GPU slot(s), 3 CPU job(s)" in out
    assert "7 cells: 7 run" in out
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("status.json")]
    assert len(statuses) == 7 and {s["state"] for s in statuses} == {"done"}
    check(ptransfer("collect", "res", cwd=tmp_path))
    results = pd.read_csv(tmp_path / "res" / "results.csv")
    assert sorted(results.groupby("tune")["cell_id"].nunique().items()) == [("frozen", 3),
                                                                           ("full", 4)]
    taxonomy = pd.read_csv(tmp_path / "res" / "taxonomy.csv")
    row = taxonomy[taxonomy["eval_set"] == "test"].iloc[0]
    assert row["finetune_gain"].startswith("full=") and row["pretraining_finetuned"].startswith(
        "full=")
    assert "pretrained full vs pretrained frozen" in row["finetune_evidence"]
