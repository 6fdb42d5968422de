"""Dependency-driven dispatch (``sweep.dispatch``) with jobs that end when submitted, and the
host-wide GPU pool (``sweep.devices``) that every sweep on a host shares."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest
from omegaconf import OmegaConf

from ptransfer.sweep.dispatch import Dispatcher, slot_counts
from ptransfer.sweep.queue import QueuedJob
from ptransfer.sweep.schedule import Job


def _job(name, kind, seconds, deps=(), group=None, cell=True):
    return QueuedJob(Job(name, kind, seconds, tuple(deps)), [f"job={name}"],
                     cell=object() if cell else None, group=group)


def _done(job, index) -> Future:
    future: Future = Future()
    future.set_result(job.name)
    return future


def _store(name, shards, readers, group=None):
    """A store's shard jobs (GPU) and its readers (CPU, after every shard)."""
    names = [f"{name}{k}" for k in range(len(shards))]
    return ([_job(n, "gpu", s, group=group, cell=False) for n, s in zip(names, shards)]
            + [_job(f"R{name}{k}", "cpu", r, names, group) for k, r in enumerate(readers)])


def test_readers_start_after_their_store_and_one_hot_at_once():
    jobs = [*_store("A", [9.0, 0.1], [10.0]), _job("onehot", "cpu", 1.0)]
    dispatcher = Dispatcher(_done, {"gpu": 2, "cpu": 1})
    dispatcher.run(jobs)
    order = dispatcher.started
    assert order[:3] == ["A0", "A1", "onehot"]  # both GPU slots and the CPU slot, at once
    assert order.index("RA0") > max(order.index("A0"), order.index("A1"))


def test_a_stores_short_shard_goes_before_a_long_shard_nothing_waits_for():
    # One GPU: store B's 0.1-minute shard gates a 10-minute reader, the streaming cell S
    # (5 minutes) gates nothing: B's shard first (longest path first), then S beside B's
    # reader.
    jobs = [_job("S", "gpu", 5.0), *_store("B", [0.1], [10.0])]
    dispatcher = Dispatcher(_done, {"gpu": 1, "cpu": 1})
    dispatcher.run(jobs)
    assert dispatcher.started == ["B0", "S", "RB0"]


def test_a_reader_whose_store_failed_is_not_launched():
    jobs = _store("A", [1.0], [2.0, 3.0])
    problem = {"state": "failed", "error": "shard A0 failed"}
    dispatcher = Dispatcher(_done, {"gpu": 1, "cpu": 1},
                            check=lambda job: problem if job.name.startswith("R") else None)
    assert dispatcher.run(jobs) == ["A0"]
    assert [(job.name, record) for job, record in dispatcher.skipped] == [
        ("RA0", problem), ("RA1", problem)]


def test_until_done_keeps_one_store_group_under_way_at_a_time():
    jobs = _store("A", [1.0, 1.0], [1.0], group="a") + _store("B", [5.0, 5.0], [1.0], group="b")
    dispatcher = Dispatcher(_done, {"gpu": 4, "cpu": 4}, max_groups=1)
    dispatcher.run(jobs)
    # b first (its path is longer); a opens once b's jobs have all ended.
    assert dispatcher.started == ["B0", "B1", "RB0", "A0", "A1", "RA0"]
    unlimited = Dispatcher(_done, {"gpu": 4, "cpu": 4})
    unlimited.run(jobs)
    assert unlimited.started[:4] == ["B0", "B1", "A0", "A1"]  # longest path first


def test_slots_come_from_each_kinds_launcher():
    joblib = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
    assert slot_counts({**joblib, "n_jobs": 8}, {**joblib, "n_jobs": 16}) == (
        {"gpu": 8, "cpu": 16}, "pool")
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
                         "SlurmLauncher"}
    assert slot_counts({**slurm, "array_parallelism": 32},
                       {**slurm, "array_parallelism": 128}) == ({"gpu": 32, "cpu": 128},
                                                                "threads")
    assert slot_counts({"_target_": "hydra._internal.core_plugins.basic_launcher."
                                    "BasicLauncher"}, {})[1] == "serial"


def _cfg(results_dir):
    return OmegaConf.create({"results_dir": str(results_dir),
                             "extract": {"device": "auto", "jobs_per_gpu": 1}})


def test_two_results_folders_share_the_hosts_one_gpu(tmp_path, monkeypatch):
    from ptransfer.sweep.devices import acquire_device

    monkeypatch.setenv("PTRANSFER_FAKE_GPUS", "1")
    first = acquire_device(_cfg(tmp_path / "a"), True, "sweep a")
    assert first.name == "cuda:0"
    got: list = []
    waiting = threading.Thread(target=lambda: got.append(
        acquire_device(_cfg(tmp_path / "b"), True, "sweep b")))
    waiting.start()
    time.sleep(1.5)
    assert not got  # the other results folder's job waits for the host's only GPU
    released = time.time()
    first.release()
    waiting.join(timeout=30)
    assert got and got[0].name == "cuda:0" and got[0].acquired >= released
    got[0].release()
    assert not list(tmp_path.rglob("*.claim"))  # nothing of the pool under results folders


@pytest.mark.parametrize("where", ["env", "default"])
def test_the_pool_lives_outside_results_folders(tmp_path, monkeypatch, where):
    from ptransfer.sweep.devices import devices_dir

    if where == "env":
        monkeypatch.setenv("PTRANSFER_DEVICES_DIR", str(tmp_path / "pool"))
        assert devices_dir() == tmp_path / "pool"
    else:
        monkeypatch.delenv("PTRANSFER_DEVICES_DIR")
        assert devices_dir().name == "devices" and "ptransfer-" in devices_dir().parent.name
