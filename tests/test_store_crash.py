"""Crash safety and concurrency of the sharded embedding store, with real processes.

Writers run in subprocesses (tests/extract_fakes.py, a slow fake encoder). A writer
SIGKILLed mid-shard publishes nothing partial; its committed parts are adopted by the re-run,
which embeds only the rest, and the store then reads equal to an uninterrupted one. Several
writers at once (one per shard, as phase-1 jobs, or all racing on every shard with claims
disabled and filelock a no-op) build a store equal, value for value, to a single writer's.
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

from ptransfer.embed.batching import Batching
from ptransfer.embed.extract import extract_to_store
from ptransfer.embed.shards import plan_shards
from ptransfer.embed.store import EmbeddingStore

TESTS = Path(__file__).resolve().parent
SCRIPT = TESTS / "extract_fakes.py"
N_SEQUENCES = 60
SHARD_TOKENS = 400  # 60 sequences of 5-40 residues (1,528 tokens): 4 shards

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    paths = [str(TESTS.parent / "src"), str(TESTS), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "torch")}


def start(path: Path, env: dict, delay: float, *extra: str, flush_bytes: int = 1500,
          commit_seconds: float = 120.0) -> subprocess.Popen:
    command = [sys.executable, str(SCRIPT), str(path), str(N_SEQUENCES), str(delay),
               str(flush_bytes), str(commit_seconds), *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(process: subprocess.Popen) -> int:
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-3000:]
    return int(out.split("embedded ")[-1])


def open_store(path: Path) -> EmbeddingStore:
    return EmbeddingStore(path, {"model": "fake"}, 3, 4, level="residue")


def reference_store(tmp_path: Path) -> EmbeddingStore:
    """The same extraction, uninterrupted, one writer, in this process."""
    store = open_store(tmp_path / "reference.h5")
    extract_to_store(FakeEncoder(n_layers=3, dim=4), make_sequences(N_SEQUENCES), store,
                     toks_per_batch=500, progress=False)
    return store


def assert_same_rows(store: EmbeddingStore, reference: EmbeddingStore) -> None:
    sequences = make_sequences(N_SEQUENCES)
    assert len(store) == N_SEQUENCES and store.missing(sequences) == []
    for layer in range(3):
        np.testing.assert_array_equal(store.read_layer(layer, sequences, dtype=None),
                                      reference.read_layer(layer, sequences, dtype=None))


def part_files(path: Path, shard: str = "*") -> set[Path]:
    return set(path.parent.glob(f"{path.name}.shards/{shard}.parts/*/*.h5"))


def kill_after_new_part(process: subprocess.Popen, path: Path, timeout: float = 90.0,
                        shard: str = "*") -> None:
    """SIGKILL the process once a new part of ``shard`` (its own) is committed."""
    before = part_files(path, shard)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"writer exited before it could be killed: {process.stderr.read()[-2000:]}")
        if part_files(path, shard) - before:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            return
        time.sleep(0.02)
    process.kill()
    pytest.fail("no part was committed in time")


def rows_in_parts(path: Path, reference: EmbeddingStore) -> int:
    """Rows the killed writer committed; each is whole and equals the reference's."""
    by_key = {}
    for part in part_files(path):
        with h5py.File(part, "r") as handle:
            keys = handle["keys"][...].astype(str)
            offsets = np.concatenate([[0], np.cumsum(handle["lengths"][...])])
            layer = handle["layer_002"][...]
            for i, key in enumerate(keys):
                by_key[key] = layer[offsets[i]: offsets[i + 1]]
    sequences = {s: s for s in make_sequences(N_SEQUENCES)}
    from ptransfer.embed.store_files import sequence_key
    for sequence in sequences:
        if sequence_key(sequence) in by_key:
            np.testing.assert_array_equal(by_key[sequence_key(sequence)],
                                          reference.read_layer(2, [sequence], dtype=None))
    return len(by_key)


def test_killed_writer_publishes_nothing_partial_and_the_rerun_embeds_only_the_rest(
        tmp_path, env):
    reference = reference_store(tmp_path)
    path = tmp_path / "killed.h5"
    committed = 0
    for _ in range(2):  # killed with no part yet, then killed again while resuming
        kill_after_new_part(start(path, env, 0.05), path)
        store = open_store(path)
        assert len(store) == 0 and store._shard_files() == []  # nothing partial published
        rows = rows_in_parts(path, reference)
        assert rows > committed
        committed = rows
    assert finish(start(path, env, 0.0)) == N_SEQUENCES - committed
    assert_same_rows(open_store(path), reference)
    assert part_files(path) == set() and list(tmp_path.rglob("*.tmp")) == []


def test_a_killed_shard_writer_leaves_the_other_shards_and_only_it_is_redone(tmp_path, env):
    reference = reference_store(tmp_path)
    path = tmp_path / "four.h5"
    shards = plan_shards(path, make_sequences(N_SEQUENCES), frozenset(), SHARD_TOKENS,
                         Batching(64, None, "window"))  # as the writers plan them
    assert len(shards) == 4
    tokens = ["--shard-tokens", str(SHARD_TOKENS)]
    writers = [start(path, env, 0.0, *tokens, "--shard", str(k)) for k in (0, 1, 3)]
    victim = start(path, env, 0.05, *tokens, "--shard", "2")
    kill_after_new_part(victim, path, shard=shards[2].name)
    assert [finish(w) for w in writers] == [len(shards[k].todo) for k in (0, 1, 3)]
    store = open_store(path)
    published = sorted(p.stem for p in store._shard_files())
    assert published == sorted(shards[k].name for k in (0, 1, 3))  # not the killed one
    assert len(store) == N_SEQUENCES - len(shards[2].todo)
    committed = rows_in_parts(path, reference)
    assert 0 < committed < len(shards[2].todo)
    # The re-run of the whole extraction redoes the killed shard only, from its parts.
    assert finish(start(path, env, 0.0, *tokens)) == len(shards[2].todo) - committed
    assert_same_rows(open_store(path), reference)


@pytest.mark.parametrize("mode", ["one writer per shard", "four writers race on every shard"])
def test_four_concurrent_writers_build_the_single_writer_store_without_any_lock(
        tmp_path, env, mode):
    # filelock is a no-op in every writer: the lock is not what makes the store correct.
    # In the racing mode claims are disabled too: all four write every shard at once and
    # only the publications' first-wins rename decides.
    reference = reference_store(tmp_path)
    path = tmp_path / "shared.h5"
    common = ["--shard-tokens", str(SHARD_TOKENS), "--no-filelock"]
    if mode == "one writer per shard":
        writers = [start(path, env, 0.01, *common, "--shard", str(k)) for k in range(4)]
    else:
        writers = [start(path, env, 0.01, *common, "--no-claims") for _ in range(4)]
    embedded = [finish(w) for w in writers]
    store = open_store(path)
    assert len(store._shard_files()) == 4
    assert_same_rows(store, reference)
    if mode == "one writer per shard":
        assert sum(embedded) == N_SEQUENCES
    store.finalize()
    with h5py.File(path, "r") as index:  # the index file reads as one store, too
        assert len(index["keys"]) == N_SEQUENCES
    assert part_files(path) == set() and list(tmp_path.rglob("*.tmp")) == []


def test_two_writers_of_one_store_embed_each_sequence_once(tmp_path, env):
    # With claims (the default), the second writer waits for the first's shard, then finds
    # nothing left: no work is duplicated.
    reference = reference_store(tmp_path)
    path = tmp_path / "two.h5"
    first, second = start(path, env, 0.01), start(path, env, 0.01)
    assert finish(first) + finish(second) == N_SEQUENCES
    assert_same_rows(open_store(path), reference)


def test_time_based_commit_survives_a_kill_and_is_not_re_embedded(tmp_path, env):
    # A store far below the size threshold (1 GiB): only the 0.3 s commit interval commits.
    reference = reference_store(tmp_path)
    path = tmp_path / "timed.h5"
    process = start(path, env, 0.05, flush_bytes=1 << 30, commit_seconds=0.3)
    kill_after_new_part(process, path)
    survived = rows_in_parts(path, reference)
    assert finish(start(path, env, 0.0, flush_bytes=1 << 30)) == N_SEQUENCES - survived
    assert_same_rows(open_store(path), reference)


def test_a_parts_folder_removed_by_another_writer_while_listed_is_not_an_error(tmp_path,
                                                                               monkeypatch):
    """Two writers of one shard clean up its parts folder at once: a sub-folder the other
    writer deletes while this one lists it (the glob raises) must not fail the publication."""
    from types import SimpleNamespace

    from ptransfer.embed import store_writer

    store = SimpleNamespace(path=tmp_path / "s.h5")
    parts = store_writer.PartsFolder(store, "shard-x")
    (parts.folder / "other-writer").mkdir(parents=True)
    real_glob = Path.glob

    def vanishing(self, pattern):
        if self == parts.folder:
            raise FileNotFoundError(2, "No such file or directory", str(self / "other-writer"))
        return real_glob(self, pattern)

    monkeypatch.setattr(Path, "glob", vanishing)
    parts.remove([])  # raised FileNotFoundError before
    assert store_writer.PartsFolder(store, "shard-x").adopted == []
