"""Multiruns through the CLI: dispatch, devices, concurrency, repair, launchers (CPU only).

- A simulated pool of 4 GPUs (``PTRANSFER_FAKE_GPUS=4``) under ``gpu_box`` (joblib) and
  submitit_local: every job records the device it held and when; no two jobs hold one
  device at once, and all four are used. The gb1 sweep (subsampled) dispatched there gives
  the rows, byte for byte, of a serial run with one shard per store, and a one-hot cell
  ends before the last shard starts (no phase barrier); probe cells load no model and take
  no GPU.
- Two ``ptransfer run -m`` of one sweep started at once on one results dir, sharing one
  simulated GPU, both finish with the rows of an uninterrupted run; each shard is published
  once, a job that waits for the other sweep's shard holds no GPU, and each sweep's summary
  says what it published and what it adopted.
- A shard file deleted from a finished sweep: ``store verify`` says MISSING (exit 1), the
  sweep with ``force=true`` extracts that shard alone, and verify passes again.
- A sweep killed (SIGKILL) while extracting leaves only whole shards; its re-run launches
  jobs for the unpublished shards only and ends with the uninterrupted run's rows.
- The launcher presets give GPU and CPU jobs their own settings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import REPO, SHARED_DATA, check, needs_data, ptransfer
from tiny_models import tiny_esm2_searchpath

from ptransfer.embed.verify import OK, verify_file

FAKE_GPUS = {"PTRANSFER_FAKE_GPUS": "4"}


@pytest.fixture()
def tiny_conf(tmp_path):
    return tiny_esm2_searchpath(tmp_path)


def _statuses(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.rglob("job_status.json"))]


def _collected(work: Path, results: str) -> pd.DataFrame:
    check(ptransfer("collect", results, cwd=work))
    frame = pd.read_csv(work / results / "results.csv")
    return frame.sort_values(["cell_id", "layer", "eval_set", "metric"]).reset_index(drop=True)


def assert_one_job_per_device_at_a_time(statuses: list[dict], n_devices: int = 4) -> None:
    held = [s for s in statuses if str(s.get("device", "")).startswith("cuda:")]
    assert {s["device"] for s in held} == {f"cuda:{k}" for k in range(n_devices)}
    for device in {s["device"] for s in held}:
        spans = sorted((s["device_from"], s["ended"]) for s in held if s["device"] == device)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"two jobs held {device} at once: {spans}"


def _tiny_sweep(tiny_conf: str, *extra: str) -> list[str]:
    # 600 synthetic sequences of 40 residues: batches of 97 (4,096 tokens), one per shard of
    # <= 4,300 tokens: 7 shards (shards are cut only where a batch ends).
    return ["run", "-m", tiny_conf, "task=synthetic", "model=tiny_esm2,onehot",
            "ablation=random_init,pretrained", "seed=0", "grid.deterministic_seed=0",
            "grid.skip_pretrained_plm=true", "results_dir=res", "extract.progress=false",
            "extract.shard_tokens=4300", *extra]


@needs_data("flip_gb1")
def test_gb1_dispatched_on_four_simulated_gpus_gives_the_serial_one_shard_rows(tmp_path):
    # The preset's cells for two random-init models and one-hot: 3 splits x 3 = 9 cells.
    common = ["+experiment=gb1", "model=esm2_t6_8M_UR50D,carp_600k,onehot",
              f"data.root={SHARED_DATA}", "extract.progress=false",
              "subsample={train: 120, val: 40, test: 150}"]
    single = check(ptransfer("run", "-m", *common, "results_dir=one", cwd=tmp_path))
    assert "extraction: 2 shard jobs: 2 published" in single  # serial, a shard per store
    four = check(ptransfer("run", "-m", *common, "results_dir=four", "extract.shard_tokens=9000",
                           "hydra/launcher=gpu_box", "hydra.launcher.n_jobs=4",
                           "hydra.sweeper.probe_launcher.n_jobs=2", cwd=tmp_path,
                           env_extra=FAKE_GPUS))
    statuses = _statuses(tmp_path / "four")
    shards = [s for s in statuses if s.get("phase") == "extract"]
    assert len(shards) >= 8 and all(s["state"] == "done" for s in shards)
    assert "9 run, 0 skipped" in four and "0 failed" in four
    pd.testing.assert_frame_equal(_collected(tmp_path, "one"), _collected(tmp_path, "four"))
    for rows in (tmp_path / "one").glob("cells/*/rows.csv"):  # byte for byte
        assert rows.read_bytes() == (tmp_path / "four" / "cells" / rows.parent.name /
                                     "rows.csv").read_bytes()
    assert_one_job_per_device_at_a_time(statuses)
    # No barrier: a one-hot cell (no input, a CPU slot) ended before the last shard started.
    onehot = [s for s in statuses if "__onehot__" in s.get("cell_id", "")]
    assert len(onehot) == 3
    assert min(s["ended"] for s in onehot) < max(s["device_from"] for s in shards)
    # The probe cells read the stores on CPU slots: no model loaded, no GPU taken.
    cells = [json.loads(p.read_text()) for p in (tmp_path / "four").rglob("cells/*/status.json")]
    assert len(cells) == 9 and not any(c["model_loaded"] for c in cells)
    assert {c["device"] for c in cells} == {"cpu"}


def test_submitit_local_jobs_wait_for_a_free_simulated_gpu(tmp_path, tiny_conf):
    out = check(ptransfer(*_tiny_sweep(tiny_conf, "hydra/launcher=submitit_local",
                                       "hydra.launcher.timeout_min=10"),
                          cwd=tmp_path, env_extra=FAKE_GPUS))
    assert "extraction: 7 shard jobs: 7 published" in out and "2 run, 0 skipped" in out
    shards = [s for s in _statuses(tmp_path / "res") if s.get("phase") == "extract"]
    assert len(shards) == 7  # at most four at once: one per simulated GPU
    assert_one_job_per_device_at_a_time(shards)


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    """The tiny sweep run once, uninterrupted: (its extra config dir, its collected rows)."""
    work = tmp_path_factory.mktemp("reference")
    searchpath = tiny_esm2_searchpath(work)
    check(ptransfer(*_tiny_sweep(searchpath), cwd=work))
    return searchpath, _collected(work, "res")


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "TORCH_HOME": str(tmp_path / ".torch"), "PTRANSFER_OFFLINE": "1"}


def test_two_sweeps_at_once_share_the_work_and_never_hold_a_gpu_while_waiting(
        tmp_path, tiny_reference):
    # One simulated GPU for both: a job waiting for the other sweep's shard holds nothing
    # (holding the GPU while waiting would stall the writer it waits for).
    searchpath, reference = tiny_reference
    env = {**_env(tmp_path), "PTRANSFER_FAKE_GPUS": "1"}
    both = [subprocess.Popen([sys.executable, "-m", "ptransfer.cli", *_tiny_sweep(searchpath)],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], "\n".join(o[-3000:] for o in outs)
    pd.testing.assert_frame_equal(reference, _collected(tmp_path, "res"))
    shards = [s for s in _statuses(tmp_path / "res") if s.get("phase") == "extract"]
    published = [s for s in shards if s["state"] == "done"]
    adopted = [s for s in shards if s["state"] == "adopted"]
    assert len(shards) == 14 and len(published) + len(adopted) == 14
    assert len({s["shard"] for s in published}) == len(published) == 7  # each shard once
    raced = [s for s in adopted if s["embedded"]]  # computed, then lost the publication
    assert len(raced) <= 1  # at most one shard's work done twice (a claim broken in a race)
    assert all(s["device"] is None for s in adopted if s not in raced)
    for status in published:  # the device was taken after the wait for the claim
        assert status["device_from"] >= status["started"] + status["waited"] - 0.01
    assert_one_job_per_device_at_a_time(shards, n_devices=1)
    counts = [re.search(r"(\d+) published, (\d+) adopted from another writer", out).groups()
              for out in outs]  # each sweep says what it did
    assert sum(int(done) for done, _ in counts) == len(published)
    assert sorted(int(done) + int(other) for done, other in counts) == [7, 7]


def test_a_deleted_shard_is_redone_by_the_sweep_and_verifies(tmp_path, tiny_reference):
    searchpath, reference = tiny_reference
    finished = Path(searchpath.split("file://")[1].rstrip("]")).parent / "res"
    shutil.copytree(finished, tmp_path / "res", symlinks=True)  # the finished sweep, moved
    shard = sorted((tmp_path / "res").glob("embeddings/*/*.shards/shard-*.h5"))[3]
    shard.unlink()
    verify = ptransfer("store", "verify", "results_dir=res", cwd=tmp_path)
    assert verify.returncode == 1 and f"MISSING   {shard.relative_to(tmp_path)}" in verify.stdout
    out = check(ptransfer(*_tiny_sweep(searchpath, "force=true"), cwd=tmp_path))
    assert "extraction: 1 shard jobs: 1 published" in out
    verify = check(ptransfer("store", "verify", "results_dir=res", cwd=tmp_path))
    assert "MISSING" not in verify and "DAMAGED" not in verify
    pd.testing.assert_frame_equal(reference, _collected(tmp_path, "res"))


def test_kill_while_extracting_then_rerun_redoes_only_unpublished_shards(tmp_path, tiny_reference):
    searchpath, reference = tiny_reference
    sweep = subprocess.Popen([sys.executable, "-m", "ptransfer.cli", *_tiny_sweep(searchpath)],
                             cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    published = lambda: sorted(tmp_path.glob("res/embeddings/*/*.shards/shard-*.h5"))  # noqa: E731
    deadline = time.time() + 300
    while sweep.poll() is None and len(published()) < 2 and time.time() < deadline:
        time.sleep(0.02)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    assert sweep.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    done = {p.stem for p in published()}
    # The store's reader has not run (its store is incomplete); the one-hot cell may have.
    assert 2 <= len(done) < 7 and not list(tmp_path.rglob("cells/*tiny_esm2*/rows.csv"))
    for shard in published():  # whatever was published is whole
        assert verify_file(shard).state == OK, verify_file(shard).detail
    before = set((tmp_path / "res").rglob("job_status.json"))  # the killed sweep's jobs
    out = check(ptransfer(*_tiny_sweep(searchpath), cwd=tmp_path))
    assert f"extraction: {7 - len(done)} shard jobs: {7 - len(done)} published" in out
    rerun = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("job_status.json")
             if p not in before]
    redone = {s["shard"] for s in rerun if s.get("phase") == "extract" and s.get("embedded")}
    assert redone.isdisjoint(done) and len(redone) == 7 - len(done)
    pd.testing.assert_frame_equal(reference, _collected(tmp_path, "res"))


def test_force_and_store_rebuild_re_extract_once_in_phase_1(tmp_path, tiny_reference):
    """``force=true store.rebuild=true`` on a finished sweep: the sweep deletes the stores
    once before planning, phase 1 extracts every shard again, and the phase-2 cells re-fit
    on them without deleting them again (no cell loads a model): the same rows."""
    searchpath, reference = tiny_reference
    finished = Path(searchpath.split("file://")[1].rstrip("]")).parent / "res"
    shutil.copytree(finished, tmp_path / "res", symlinks=True)  # the finished sweep, moved
    before = set((tmp_path / "res").rglob("job_status.json"))
    out = check(ptransfer(*_tiny_sweep(searchpath, "force=true", "store.rebuild=true"),
                          cwd=tmp_path))
    assert "extraction: 7 shard jobs: 7 published" in out
    rerun = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("job_status.json")
             if p not in before]
    cells = [s for s in rerun if s.get("phase") != "extract"]
    assert len(cells) == 2 and {s["state"] for s in cells} == {"done"}  # one-hot, tiny_esm2
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("cells/*/status.json")]
    assert len(statuses) == 2 and not any(s["model_loaded"] for s in statuses)
    pd.testing.assert_frame_equal(reference, _collected(tmp_path, "res"))


def test_each_phase_gets_its_own_launcher_settings():
    from hydra import compose, initialize_config_dir
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext
    from omegaconf import OmegaConf

    from ptransfer.sweep.launch import launcher_config

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=big",
                                           "hydra.sweeper.probe_launcher.partition=small"],
                      return_hydra_config=True)
    from hydra.core.global_hydra import GlobalHydra

    context = HydraContext(config_loader=GlobalHydra.instance().config_loader()
                           if GlobalHydra.instance().is_initialized() else None,
                           callbacks=None)
    settings = {}
    for phase in ("extract", "probe"):
        updates = OmegaConf.to_container(cfg.hydra.sweeper[f"{phase}_launcher"], resolve=True)
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=lambda c: None,
            config=launcher_config(cfg, updates))
        settings[phase] = launcher.params
    assert (settings["extract"]["gpus_per_node"], settings["probe"]["gpus_per_node"]) == (1, 0)
    assert (settings["extract"]["partition"], settings["probe"]["partition"]) == ("big", "small")
    assert settings["probe"]["mem_gb"] < settings["extract"]["mem_gb"]
    with pytest.raises(ValueError, match="'n_jobs' is not a setting of the launcher"):
        launcher_config(cfg, {"n_jobs": 4})
