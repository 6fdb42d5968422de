"""A finished sweep costs almost nothing: done cells are skipped without model code, and a
multirun whose every design cell is complete is answered before Hydra launches a job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cli_helpers import REPO, check, ptransfer
from hydra import compose, initialize_config_dir

from ptransfer.sweep import done
from ptransfer.sweep.done import done_sweep_counts, skip_done_sweep
from ptransfer.sweep.job import run_job

CONF = REPO / "conf"
HEAVY = ("torch", "esm", "sequence_models", "transformers", "sklearn", "h5py")


def _cell(results, *extra):
    return ["task=synthetic", "task.n_variants=120", "model=onehot", "extract.progress=false",
            f"results_dir={results}", "head.ridge.alphas=[1.0]", *extra]


def _run(overrides) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return run_job(compose("config", overrides=overrides))


SKIP_IN_CHILD = """
import json, sys
from hydra import compose, initialize_config_dir
from ptransfer.sweep.job import run_job
with initialize_config_dir(config_dir=sys.argv[2], version_base="1.3"):
    status = run_job(compose("config", overrides=sys.argv[3:]))
heavy = json.loads(sys.argv[1])
print(json.dumps({"state": status["state"], "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


def test_a_done_cell_is_skipped_without_importing_model_code(tmp_path):
    overrides = _cell(tmp_path / "res")
    assert _run(overrides)["state"] == "done"
    out = subprocess.run([sys.executable, "-c", SKIP_IN_CHILD, json.dumps(HEAVY), str(CONF),
                          *overrides],
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"state": "skipped", "loaded": []}


def test_precheck_answers_only_when_every_design_cell_is_done(tmp_path, capsys):
    results = tmp_path / "res"
    # ablation=random_init is outside the design for one-hot; two landscapes = two cells.
    sweep = ["-m", *_cell(results, "ablation=pretrained,random_init", "task.n_variants=120,90")]
    assert done_sweep_counts(CONF, sweep) is None
    assert _run(_cell(results))["state"] == "done"
    assert done_sweep_counts(CONF, sweep) is None  # the 90-variant cell is not done yet
    assert _run(_cell(results, "task.n_variants=90"))["state"] == "done"
    assert done_sweep_counts(CONF, sweep) == (2, 2)
    assert done_sweep_counts(CONF, [*sweep, "force=true"]) is None
    assert done_sweep_counts(CONF, sweep[1:]) is None  # not a multirun: run_job's own skip
    capsys.readouterr()
    assert skip_done_sweep(CONF, sweep)
    out = capsys.readouterr().out
    assert "2 cells: 0 run, 2 skipped" in out and "nothing to do" in out


def test_a_remembered_done_sweep_is_rechecked_cell_by_cell(tmp_path, monkeypatch):
    results = tmp_path / "res"
    sweep = ["-m", *_cell(results, "ablation=pretrained,random_init", "task.n_variants=120,90")]
    statuses = [_run(_cell(results))["rows"], _run(_cell(results, "task.n_variants=90"))["rows"]]
    assert done_sweep_counts(CONF, sweep) == (2, 2)  # composes every combination, remembers
    assert len(list((results / done.RECORDS).glob("*.json"))) == 1
    real_compose = done.compose
    calls = []
    monkeypatch.setattr(done, "compose", lambda *a, **k: calls.append(1) or real_compose(*a, **k))
    assert done_sweep_counts(CONF, sweep) == (2, 2)
    assert len(calls) == 1  # only the base config: the cells came from the record
    assert done_sweep_counts(CONF, [*sweep, "seed=42"]) == (2, 2)  # other overrides:
    assert len(calls) == 1 + 5 and len(list((results / done.RECORDS).glob("*.json"))) == 2
    for record in (results / done.RECORDS).glob("*.json"):
        record.write_text("{torn")
    assert done_sweep_counts(CONF, sweep) == (2, 2)  # a torn record: the full check
    status = Path(statuses[1]) / "status.json"
    status.write_text(json.dumps({"state": "failed"}))
    assert done_sweep_counts(CONF, sweep) is None  # the record does not hide a redone cell


def test_cli_rerun_of_a_done_sweep_launches_nothing(tmp_path):
    results = tmp_path / "res"
    assert _run(_cell(results))["state"] == "done"
    out = check(ptransfer("run", "-m", *_cell(results, "ablation=pretrained,random_init"),
                          cwd=tmp_path))
    assert "1 cells: 0 run, 1 skipped" in out and "nothing to do" in out
    assert not (results / "hydra").exists()  # Hydra launched no job
