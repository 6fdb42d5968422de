"""Crash safety and locking of the embedding store, with real processes.

An extraction runs in a subprocess (tests/extract_fakes.py, a slow fake encoder) and is
SIGKILLed after it committed shards; the re-run must finish the store, and the result must
equal an uninterrupted extraction array for array. Two concurrent writers must serialise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from extract_fakes import FakeEncoder, make_sequences

from ptransfer.embed.extract import extract_to_store
from ptransfer.embed.store import EmbeddingStore

TESTS = Path(__file__).resolve().parent
SCRIPT = TESTS / "extract_fakes.py"
N_SEQUENCES = 60
DATASETS = ("keys", "lengths", "offsets", "layer_000", "layer_001", "layer_002")

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    paths = [str(TESTS.parent / "src"), str(TESTS), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "torch")}


def start(path: Path, env: dict, delay: float, flush_bytes: int = 1500,
          commit_seconds: float = 120.0) -> subprocess.Popen:
    command = [sys.executable, str(SCRIPT), str(path), str(N_SEQUENCES), str(delay),
               str(flush_bytes), str(commit_seconds)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(process: subprocess.Popen) -> int:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    return int(out.split("embedded ")[-1])


def reference_store(tmp_path: Path) -> Path:
    """The same extraction, uninterrupted, in this process."""
    path = tmp_path / "reference.h5"
    store = EmbeddingStore(path, {"model": "fake"}, 3, 4, level="residue")
    extract_to_store(FakeEncoder(n_layers=3, dim=4), make_sequences(N_SEQUENCES), store,
                     toks_per_batch=500, progress=False)
    return path


def kill_after_new_shard(process: subprocess.Popen, shard_dir: Path, timeout: float = 90.0):
    """SIGKILL the process once it has committed a shard of its own."""
    before = set(shard_dir.glob("*.h5")) if shard_dir.is_dir() else set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"writer exited before it could be killed: {process.stderr.read()[-2000:]}")
        if shard_dir.is_dir() and set(shard_dir.glob("*.h5")) - before:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            return
        time.sleep(0.02)
    process.kill()
    pytest.fail("no shard was committed in time")


def assert_killed_state_is_partial(path: Path, reference: Path) -> int:
    """The killed state never reads as complete; every row it has is whole and right."""
    if path.exists():  # an older complete state, with fewer rows than the full run
        with h5py.File(path, "r") as handle:
            assert bool(handle.attrs["complete"]) and len(handle["keys"]) < N_SEQUENCES
    store = EmbeddingStore(path, {"model": "fake"}, 3, 4, level="residue")  # repairs
    sequences = make_sequences(N_SEQUENCES)
    assert 1 <= len(store) < N_SEQUENCES
    assert len(store.missing(sequences)) == N_SEQUENCES - len(store)
    present = [s for s in sequences if s in store]
    expected = EmbeddingStore(reference, {"model": "fake"}, 3, 4, level="residue")
    for layer in range(3):
        np.testing.assert_array_equal(store.read_layer(layer, present, dtype=None),
                                      expected.read_layer(layer, present, dtype=None))
    with pytest.raises(KeyError):
        store.read_sequence(store.missing(sequences)[0])
    return len(store)


def assert_same_file(path: Path, reference: Path) -> None:
    with h5py.File(path, "r") as got, h5py.File(reference, "r") as want:
        assert bool(got.attrs["complete"]) and len(got["keys"]) == N_SEQUENCES
        for name in DATASETS:
            np.testing.assert_array_equal(got[name][...], want[name][...])


def test_killed_extraction_resumes_to_the_uninterrupted_result(tmp_path, env):
    reference = reference_store(tmp_path)
    path = tmp_path / "killed.h5"
    shard_dir = path.with_name(path.name + ".shards")
    rows_so_far = 0
    for _ in range(2):  # killed with no main file yet, then killed with a main file
        kill_after_new_shard(start(path, env, delay=0.05), shard_dir)
        assert shard_dir.is_dir()
        rows = assert_killed_state_is_partial(path, reference)
        assert rows > rows_so_far
        rows_so_far = rows
    assert finish(start(path, env, delay=0.0)) == N_SEQUENCES - rows_so_far
    assert_same_file(path, reference)
    assert not shard_dir.exists()
    assert not path.with_name(path.name + ".tmp").exists()


def test_two_concurrent_writers_end_with_one_correct_store(tmp_path, env):
    reference = reference_store(tmp_path)
    path = tmp_path / "shared.h5"
    first, second = start(path, env, delay=0.01), start(path, env, delay=0.01)
    embedded = finish(first) + finish(second)
    assert embedded == N_SEQUENCES  # the second writer waited, then found nothing missing
    assert_same_file(path, reference)


def test_time_based_commit_survives_a_kill_and_is_not_re_embedded(tmp_path, env):
    # A store far below the size threshold (1 GiB): only the 0.3 s commit interval commits.
    reference = reference_store(tmp_path)
    path = tmp_path / "timed.h5"
    shard_dir = path.with_name(path.name + ".shards")
    process = start(path, env, delay=0.05, flush_bytes=1 << 30, commit_seconds=0.3)
    kill_after_new_shard(process, shard_dir)
    survived = assert_killed_state_is_partial(path, reference)
    assert finish(start(path, env, delay=0.0, flush_bytes=1 << 30)) == N_SEQUENCES - survived
    assert_same_file(path, reference)
