"""Sweeps: design rules, resume after a kill, joblib and submitit_local launchers, plan."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from cli_helpers import REPO, check, ptransfer
from omegaconf import OmegaConf
from tiny_models import model_config, write_tiny

from ptransfer.sweep.job import excluded_reason

TINY = {"tiny_esm2": "esm2", "tiny_carp": "carp"}


@pytest.fixture()
def tiny_conf(tmp_path):
    """A config dir with tiny ESM-2 and CARP model configs, added to Hydra's search path."""
    conf = tmp_path / "extra_conf" / "model"
    conf.mkdir(parents=True)
    for name, family in TINY.items():
        cfg = model_config(family, name=name)
        (conf / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return f"hydra.searchpath=[file://{conf.parent}]"


def _sweep_args(tiny_conf: str, *extra: str) -> list[str]:
    return ["run", "-m", tiny_conf, "task=synthetic", "model=onehot,tiny_esm2,tiny_carp",
            "ablation=pretrained,random_init", "seed=42,0", "grid.skip_pretrained_plm=true",
            "results_dir=res", "extract.progress=false", *extra]


def _collected(work) -> pd.DataFrame:
    check(ptransfer("collect", "res", cwd=work))
    frame = pd.read_csv(work / "res" / "results.csv")
    return frame.sort_values(["cell_id", "layer", "eval_set", "metric"]).reset_index(drop=True)


def _cfg(**overrides):
    cfg = OmegaConf.create({
        "model": {"family": "esm2"}, "ablation": {"name": "pretrained"}, "seed": 42,
        "checkpoint": "final", "grid": {"deterministic_seed": 42, "skip_pretrained_plm": False},
    })
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_design_rules():
    assert excluded_reason(_cfg()) is None
    assert excluded_reason(_cfg(**{"ablation.name": "random_init", "seed": 0})) is None
    assert "runs once" in excluded_reason(_cfg(seed=0))
    assert "no weights to ablate" in excluded_reason(
        _cfg(**{"model.family": "onehot", "ablation.name": "stat_transfer"}))
    assert "checkpoint" in excluded_reason(
        _cfg(**{"ablation.name": "random_init", "checkpoint": "step100"}))
    assert excluded_reason(_cfg(**{"ablation.name": "stat_transfer", "checkpoint": "s1"})) is None
    assert "skip_pretrained_plm" in excluded_reason(_cfg(**{"grid.skip_pretrained_plm": True}))


def test_sweep_resume_after_kill_equals_uninterrupted(tmp_path, tiny_conf):
    # Uninterrupted reference sweep: 1 one-hot + 2 models x 2 seeds random_init = 5 cells.
    ref = tmp_path / "ref"
    ref.mkdir()
    out = check(ptransfer(*_sweep_args(tiny_conf), cwd=ref))
    assert "5 run, 0 skipped" in out and "0 failed" in out
    # Same sweep, killed once two cells are done, then re-run.
    work = tmp_path / "work"
    work.mkdir()
    env = {"OMP_NUM_THREADS": "1", "TORCH_HOME": str(work / ".torch"), "PTRANSFER_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ptransfer.cli", *_sweep_args(tiny_conf)],
                            cwd=work, env={**__import__("os").environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list(work.glob("res/cells/*/rows.csv"))) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    out = check(ptransfer(*_sweep_args(tiny_conf), cwd=work))
    assert "skipped (already complete)" in out and "0 failed" in out
    pd.testing.assert_frame_equal(_collected(ref), _collected(work))
    # A third run does no work at all and says so.
    out = check(ptransfer(*_sweep_args(tiny_conf), cwd=work))
    assert "0 run, 5 skipped" in out and "nothing to do" in out


def test_joblib_launcher(tmp_path, tiny_conf):
    args = _sweep_args(tiny_conf, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    args[args.index("model=onehot,tiny_esm2,tiny_carp")] = "model=onehot,tiny_carp"
    out = check(ptransfer(*args, cwd=tmp_path))
    assert "3 run, 0 skipped (already complete), 0 failed" in out
    assert len(list((tmp_path / "res" / "cells").glob("*/rows.csv"))) == 3


def test_submitit_local_two_cells(tmp_path, tiny_conf):
    out = check(ptransfer(
        "run", "-m", tiny_conf, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
        "task=synthetic", "model=tiny_esm2", "ablation=random_init", "seed=42,0",
        "results_dir=res", "extract.progress=false", cwd=tmp_path,
    ))
    assert "2 run, 0 skipped (already complete), 0 failed" in out, out[-3000:]
    assert len(list((tmp_path / "res" / "cells").glob("*/rows.csv"))) == 2


def test_plan_counts_cells_and_estimates(tmp_path):
    out = check(ptransfer("plan", "+experiment=paper_ablations", f"results_dir={tmp_path}/r",
                          cwd=tmp_path))
    # 4 PLMs x (1 pretrained + 2 ablations x 3 seeds) + 1 one-hot = 29 cells per task, 8 tasks.
    assert "360 combinations, 232 cells in the design" in out
    assert "232 to run" in out and "GB of new embeddings" in out and "GPU-hours" in out


def test_repo_layout_for_plan():
    assert (REPO / "conf" / "experiment" / "paper_ablations.yaml").is_file()


def test_same_config_twice_gives_identical_rows(tmp_path, tiny_conf):
    # A seeded ablation (stat_transfer of a saved tiny CARP) through store, probes and rows:
    # a forced re-run reproduces every value exactly.
    weights = write_tiny("carp", tmp_path, name="tiny_carp")
    args = ["run", tiny_conf, "task=synthetic", "model=tiny_carp", f"model.weights={weights}",
            "ablation=stat_transfer", "seed=3", "results_dir=res", "extract.progress=false"]
    check(ptransfer(*args, cwd=tmp_path))
    first = _collected(tmp_path)
    check(ptransfer(*args, "force=true", cwd=tmp_path))
    pd.testing.assert_frame_equal(first, _collected(tmp_path))
    assert first.value.notna().all() and first.layer.nunique() == first.n_layers.iloc[0]
