"""`plan`'s numbers against a hand count on the gb1 preset: cells, done, stores, disk, GPU time."""

from __future__ import annotations

import json

import pytest
from cell_helpers import CONF
from cli_helpers import SHARED_DATA, needs_data

from ptransfer.analysis.cell_files import file_record
from ptransfer.sweep import plan
from ptransfer.sweep.plan import plan_cells, plan_totals, print_plan

# By hand, from conf/experiment/gb1.yaml, conf/model/{esm2_t6_8M_UR50D,carp_600k}.yaml and the
# documented planning sizes (GB1: 8,733 sequences of 56 residues embedded; pooled float32
# rows, n_layers = blocks + 1; 2 x params x (length + BOS/EOS) FLOPs at 100 TFLOP/s):
# 3 tasks x 3 models x 2 ablations = 18 combinations; the design keeps one-hot (pretrained) and
# the two PLMs (random_init; pretrained PLMs are skipped): 9 cells. The three GB1 tasks share
# one store per PLM; one-hot embeds in memory (no store).
N_SEQ, LENGTH = 8_733, 56
ESM2_DISK = N_SEQ * 7 * 320 * 4
CARP_DISK = N_SEQ * 17 * 128 * 4
ESM2_GPU_S = 2 * 7_512_474 * N_SEQ * (LENGTH + 2) / 100e12
CARP_GPU_S = 2 * 607_630 * N_SEQ * (LENGTH + 2) / 100e12


def _plan(tmp_path):
    overrides = ["+experiment=gb1", f"results_dir={tmp_path / 'res'}",
                 f"data.root={tmp_path / 'no_data'}"]
    return overrides, plan_cells(CONF, overrides)


def test_plan_numbers_equal_a_hand_count(tmp_path, capsys, monkeypatch):
    overrides, cells = _plan(tmp_path)
    totals = plan_totals(cells)
    assert (totals["combinations"], totals["cells"], totals["done"]) == (18, 9, 0)
    assert totals["extractions"] == 2
    assert totals["disk_bytes"] == pytest.approx(ESM2_DISK + CARP_DISK, rel=1e-12)
    assert totals["gpu_seconds"] == pytest.approx(ESM2_GPU_S + CARP_GPU_S, rel=1e-12)
    # Mark the three CARP cells done (status recording its rows and predictions, as a cell
    # writes it): their store is not needed.
    carp = [c for c in cells if c.excluded is None and "__carp_600k__" in c.cell_id]
    assert len(carp) == 3
    for cell in carp:
        folder = tmp_path / "res" / "cells" / cell.cell_id
        folder.mkdir(parents=True)
        (folder / "rows.csv").write_text("x\n")
        (folder / "predictions.parquet").write_bytes(b"")
        files = {name: file_record(folder / name, 0)
                 for name in ("rows.csv", "predictions.parquet")}
        (folder / "status.json").write_text(json.dumps({"state": "done", "files": files}))
    _, cells = _plan(tmp_path)
    totals = plan_totals(cells)
    assert (totals["cells"], totals["done"], len(totals["todo"])) == (9, 3, 6)
    assert totals["extractions"] == 1
    assert totals["disk_bytes"] == pytest.approx(ESM2_DISK, rel=1e-12)
    assert totals["gpu_seconds"] == pytest.approx(ESM2_GPU_S, rel=1e-12)
    capsys.readouterr()
    monkeypatch.setattr(plan, "plan_cells", lambda *args: cells)  # composing is the slow part
    print_plan(CONF, overrides)
    out = capsys.readouterr().out
    assert "18 combinations, 9 cells in the design (9 outside it)" in out
    assert "3 complete, 6 to run" in out
    assert f"~{ESM2_DISK / 1e9:.1f} GB of new embeddings from 1 extractions" in out


def test_per_residue_cells_stream_and_each_pays_its_forward_passes(tmp_path):
    # ss3 (planning size: 11,815 proteins of mean length 255) with random-init ESM-2 8M at two
    # seeds: head=auto is the streaming probe, which stores nothing and re-embeds per cell.
    cells = plan_cells(CONF, ["task=ss3", "model=esm2_t6_8M_UR50D", "ablation=random_init",
                              "seed=0,1", f"results_dir={tmp_path / 'res'}",
                              f"data.root={tmp_path / 'no_data'}"])
    totals = plan_totals(cells)
    assert (totals["cells"], totals["extractions"], totals["disk_bytes"]) == (2, 2, 0.0)
    per_cell = 2 * 7_512_474 * 11_815 * (255 + 2) / 100e12
    assert totals["gpu_seconds"] == pytest.approx(2 * per_cell, rel=1e-12)


@needs_data("flip_gb1")
def test_disk_estimate_uses_the_subsampled_sequence_counts(tmp_path, capsys, monkeypatch):
    # two_vs_rest has 381 train, 43 val and 8,309 test proteins (FLIP); capped at 100/20/200
    # the cell embeds 320 distinct 56-residue domains, not 8,733.
    overrides = ["task=gb1_two_vs_rest", "model=esm2_t6_8M_UR50D", "ablation=random_init",
                 "subsample={train: 100, val: 20, test: 200}", f"results_dir={tmp_path / 'res'}",
                 f"data.root={SHARED_DATA}"]
    cells = plan_cells(CONF, overrides)
    totals = plan_totals(cells)
    assert totals["disk_bytes"] == 320 * 7 * 320 * 4
    assert totals["gpu_seconds"] == pytest.approx(2 * 7_512_474 * 320 * (56 + 2) / 100e12,
                                                  rel=1e-12)
    monkeypatch.setattr(plan, "plan_cells", lambda *args: cells)
    print_plan(CONF, overrides)
    assert f"~{320 * 7 * 320 * 4 / 1e6:.2f} MB" in capsys.readouterr().out


def test_streaming_cells_count_in_the_gpu_line_and_plan_prints_a_makespan(tmp_path, capsys,
                                                                          monkeypatch):
    overrides = ["task=ss3", "model=esm2_t6_8M_UR50D", "ablation=random_init", "seed=0,1",
                 f"results_dir={tmp_path / 'res'}", f"data.root={tmp_path / 'no_data'}",
                 "hydra/launcher=gpu_box"]
    cells = plan_cells(CONF, overrides)
    monkeypatch.setattr(plan, "plan_cells", lambda *args: cells)
    print_plan(CONF, overrides)
    out = capsys.readouterr().out
    per_cell = 2 * 7_512_474 * 11_815 * (255 + 2) / 100e12  # 18.2 s of forward passes
    assert f"streaming and fine-tune cells {2 * per_cell:.0f} s)" in out
    # Two GPU jobs on 8 GPU slots: each its own slot, so the makespan is one cell's time.
    assert f"makespan: ~{per_cell:.0f} s on 8 GPU slot(s) + 8 CPU slot(s)" in out


def _store_plan(n_params: int, shard_tokens: int):
    from pathlib import Path

    from ptransfer.embed.shard_sizing import ShardLimits
    from ptransfer.embed.shards import PlannedShard
    from ptransfer.sweep.jobs import StorePlan, SweepPlan

    store = StorePlan(Path("s.h5"), "protein", "float32", {"model": "big"}, 49, 5120, n_params,
                      ShardLimits(), [], {})
    store.shards = [PlannedShard("shard-0123", ["M" * (shard_tokens - 2)], 1)]
    return SweepPlan([], {store.path: store})


def test_plan_warns_of_a_shard_over_the_gpu_launchers_time_limit():
    # ESM-2 15B's cost, 2 x 15e9 FLOPs a token at 100 TFLOP/s: a 1,000,000-token shard takes
    # 300 s = 5 GPU-minutes; Slurm's GPU jobs get 4 minutes.
    slurm = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    extract = {"_target_": slurm, "timeout_min": 4, "array_parallelism": 2}
    probe = {"_target_": slurm, "array_parallelism": 4}
    lines = plan.job_lines(_store_plan(15_000_000_000, 1_000_000), extract, probe)
    assert any("shard(s): 1.00M tok ~5.0 GPU-min" in line for line in lines)
    assert "makespan: ~5.0 min on 2 GPU slot(s) + 4 CPU slot(s)" in "\n".join(lines)
    warning = [line for line in lines if line.startswith("WARNING")]
    assert warning == ["WARNING: shard shard-0123 of s.h5 is estimated at 5 GPU-minutes, over "
                       "the 4-minute time limit of its launcher (hydra.launcher.timeout_min): "
                       "lower extract.shard_max_gpu_minutes below 4 or raise "
                       "hydra.launcher.timeout_min"]
    assert not [line for line in plan.job_lines(_store_plan(15_000_000_000, 1_000_000),
                                                {**extract, "timeout_min": 6}, probe)
                if line.startswith("WARNING")]


@pytest.mark.parametrize(("tokens", "text"), [(42, "42 tok"), (8_733, "8.7k tok"),
                                               (2_920_000, "2.92M tok")])
def test_small_shards_read_in_tokens_not_zero_millions(tokens, text):
    assert plan.tokens_text(tokens) == text
