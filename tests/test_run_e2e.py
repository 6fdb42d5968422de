"""The CLI end to end through Hydra: run, re-run (no work), collect, failures, plan."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_helpers import SHARED_DATA, check, needs_data, ptransfer

from ptransfer.analysis.rows import COLUMNS


def _rows(results: str | object) -> pd.DataFrame:
    files = sorted(p for p in results.rglob("rows.csv"))
    assert files, "no rows.csv written"
    return pd.concat([pd.read_csv(p) for p in files], ignore_index=True)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run (one-hot x synthetic landscape), shared by the tests below."""
    work = tmp_path_factory.mktemp("smoke")
    out = check(ptransfer("run", "+experiment=smoke", "results_dir=res", cwd=work))
    return work, out


def test_smoke_writes_schema_rows_and_prints_scores(smoke):
    work, out = smoke
    rows = _rows(work / "res")
    assert list(rows.columns) == list(COLUMNS)
    assert set(rows.eval_set) == {"val", "test"}
    assert set(rows.metric) == {"spearman", "pearson", "mse", "ndcg"}
    assert rows.model.unique().tolist() == ["onehot"]
    assert rows.layer.unique().tolist() == [0] and rows.best_layer.all()
    spearman = rows[(rows.metric == "spearman") & (rows.eval_set == "test")].value.iloc[0]
    # The landscape is mostly additive: a linear probe on one-hot features must rank it well.
    assert 0.5 < spearman <= 1.0
    assert "spearman" in out and "test" in out
    hp = json.loads(rows.hparams.iloc[0])
    assert "alpha" in hp
    cell = next((work / "res" / "cells").iterdir())
    assert (cell / "config.yaml").is_file()
    assert json.loads((cell / "status.json").read_text())["state"] == "done"


def test_rerun_does_no_work_and_says_so(smoke):
    work, _ = smoke
    rows_file = next((work / "res").rglob("rows.csv"))
    before = rows_file.stat().st_mtime_ns
    out = check(ptransfer("run", "+experiment=smoke", "results_dir=res", cwd=work))
    assert "skipped" in out and "no work done" in out
    assert rows_file.stat().st_mtime_ns == before


def test_forced_rerun_gives_identical_rows(smoke):
    work, _ = smoke
    first = _rows(work / "res")
    check(ptransfer("run", "+experiment=smoke", "results_dir=res", "force=true", cwd=work))
    second = _rows(work / "res")
    pd.testing.assert_frame_equal(first, second)


def test_collect_merges_rows(smoke):
    work, _ = smoke
    out = check(ptransfer("collect", "res", cwd=work))
    merged = pd.read_csv(work / "res" / "results.csv")
    assert len(merged) == len(_rows(work / "res"))
    assert "rows from 1 cells" in out


def test_collect_without_rows_is_a_clear_error(tmp_path):
    proc = ptransfer("collect", "nothing_here", cwd=tmp_path)
    assert proc.returncode != 0
    assert "nothing_here: no such folder" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = ptransfer("collect", "empty", cwd=tmp_path)
    assert proc.returncode != 0 and "no complete cell" in proc.stderr
    assert "under empty: run `ptransfer run` first" in proc.stderr


def test_failing_cell_is_recorded_and_sweep_goes_on(tmp_path):
    # A pretrained PLM with no weights on disk fails (clear WeightsUnavailable); one-hot runs.
    proc = ptransfer(
        "run", "-m", "+experiment=smoke", "model=onehot,esm2_t6_8M_UR50D", "results_dir=res",
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "1 run" in out and "1 failed" in out and "FAILED synthetic__esm2_t6_8M_UR50D" in out
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("cells/*/status.json")]
    assert sorted(s["state"] for s in statuses) == ["done", "failed"]
    failed = next(s for s in statuses if s["state"] == "failed")
    assert "Traceback" in failed["traceback"] and failed["log"]
    assert "esm2_t6_8M_UR50D.pt" in failed["error"]  # names the file it expected


def test_unknown_command_and_help(tmp_path):
    assert ptransfer("frobnicate", cwd=tmp_path).returncode == 2
    out = check(ptransfer("--help", cwd=tmp_path))
    for command in ("run", "plan", "collect", "report", "data"):
        assert f"ptransfer {command}" in out


def test_values_are_finite(smoke):
    work, _ = smoke
    assert np.isfinite(_rows(work / "res").value).all()


needs_gb1 = needs_data("flip_gb1/splits.zip")


@needs_gb1
def test_gb1_onehot_on_real_data(tmp_path):
    out = check(ptransfer("run", "task=gb1_two_vs_rest", "model=onehot",
                          f"data.root={SHARED_DATA}", "results_dir=res", cwd=tmp_path))
    rows = _rows(tmp_path / "res")
    test = rows[(rows.eval_set == "test") & (rows.metric == "spearman")]
    assert len(test) == 1 and test.n_eval.iloc[0] == 8309 and test.n_train.iloc[0] == 381
    assert 0.3 < test.value.iloc[0] < 0.9  # one-hot ridge on GB1 two_vs_rest: ~0.57 here
    assert "gb1_two_vs_rest | onehot" in out


@needs_gb1
def test_ss3_onehot_writes_accuracy_for_every_test_set(tmp_path):
    check(ptransfer("run", "task=ss3", "model=onehot", "subsample={train: 300, val: 60}",
                    f"data.root={SHARED_DATA}", "results_dir=res", cwd=tmp_path))
    rows = _rows(tmp_path / "res")
    acc = rows[rows.metric == "accuracy"].set_index("eval_set").value
    assert set(acc.index) == {"val", "cb513", "ts115", "casp12"}
    assert ((acc > 0.35) & (acc < 0.7)).all()  # single-residue identity: ~0.49 on full data
    # head=auto gives every encoder of a per-residue task the streaming probe (issue 10).
    assert rows["head"].unique().tolist() == ["streaming"]
    assert rows["level"].unique().tolist() == ["residue"]
    preds = pd.read_parquet(next((tmp_path / "res").rglob("predictions.parquet")))
    scored = preds.groupby("eval_set", observed=True).size()
    n_eval = rows[rows.metric == "accuracy"].set_index("eval_set").n_eval
    assert scored.to_dict() == n_eval.to_dict() and (preds.position >= 0).all()
