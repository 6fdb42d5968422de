"""Data safety of the embedding store: full disks, damaged files, time-based commits.

- Disk full: a patched free-space probe refuses before anything is written; an injected
  ENOSPC in the middle of an extraction ends in a clean ``failed`` cell with no temporaries,
  and a later run completes; on a real tmpfs (root only) the process exits with a clean
  error, never a segfault.
- Damage: zeroing 4 KB of a store's data is detected by a run and by ``store verify``, both
  naming the file; format-1 stores (no checksums) still read.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import hydra
import numpy as np
import pytest
from cli_helpers import REPO, check, ptransfer
from extract_fakes import FakeEncoder, make_sequences
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from tiny_models import model_config

import ptransfer.embed.diskspace as diskspace
import ptransfer.embed.store_writer as store_writer
from ptransfer.cell.key import cell_key, is_done
from ptransfer.cell.spec import cell_spec
from ptransfer.cell.status import read_status
from ptransfer.embed.extract import extract_to_store
from ptransfer.embed.features import StoreFeatures
from ptransfer.embed.store import EmbeddingStore, StoreError, sequence_key
from ptransfer.embed.verify import DAMAGED, OK, UNCHECKED, verify_dir, verify_file
from ptransfer.sweep.job import run_job
from ptransfer.tasks.base import Split, Task

TESTS = Path(__file__).resolve().parent


def tiny_cfg(results: Path, *overrides: str):
    """A composed cell config: tiny random-init ESM-2 on the synthetic task, in-process."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["task=synthetic", "ablation=random_init",
                                           f"results_dir={results}", "extract.progress=false",
                                           *overrides])
    with open_dict(cfg):
        cfg.model = OmegaConf.create(model_config("esm2", name="tiny_esm2"))
    return cfg


def files_under(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if p.is_file())


# ------------------------------------------------------------------ disk full
def test_free_space_refusal_names_both_numbers_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(diskspace, "free_bytes", lambda directory: 12345)
    cfg = tiny_cfg(tmp_path / "res")
    status = run_job(cfg)
    assert status["state"] == "failed"
    message = status["error"]
    store_dir = Path(cfg.store_dir)
    assert message.startswith("DiskSpaceError: not enough disk")
    assert "12345 bytes" in message and str(store_dir / "tiny_esm2") in message
    # Needed: 2 x (sequences x layers x dims x 4 bytes) x 1.02 + 1 MiB, from the config.
    n_sequences = len(hydra.utils.instantiate(cfg.task).all_sequences())
    n_layers, dim = cfg.model.n_blocks + 1, cfg.model.dim
    needed = int(2 * n_sequences * n_layers * dim * 4 * 1.02 + (1 << 20))
    assert f"({needed} bytes)" in message
    assert files_under(tmp_path, "*.h5") == [] and files_under(tmp_path, "*.tmp") == []
    assert read_status(cell_key(cell_spec(cfg)).dir)["state"] == "failed"
    monkeypatch.undo()  # space freed: the same cell now completes
    assert run_job(tiny_cfg(tmp_path / "res"))["state"] == "done"


class _FillingDisk:
    """A raw file whose writes fail with ENOSPC once ``budget`` bytes were written in all."""

    written = 0
    budget = 0

    def __init__(self, raw) -> None:
        self._raw = raw

    def write(self, view) -> int:
        if _FillingDisk.written + len(view) > _FillingDisk.budget:
            raise OSError(errno.ENOSPC, "No space left on device")
        _FillingDisk.written += len(view)
        return self._raw.write(view)

    def __getattr__(self, name):
        return getattr(self._raw, name)


def test_enospc_mid_extraction_fails_the_cell_cleanly(tmp_path, monkeypatch):
    original = diskspace.GuardedFile.__init__

    def filling(self, path):
        original(self, path)
        self._raw = _FillingDisk(self._raw)

    # Commit a part for every row (parts are cut where a batch ends: one sequence per batch),
    # and let the disk fill after ~3 parts.
    monkeypatch.setattr(diskspace.GuardedFile, "__init__", filling)
    _FillingDisk.written, _FillingDisk.budget = 0, 3 * 12_000
    cfg = tiny_cfg(tmp_path / "res", "store.commit_seconds=1e-9", "extract.toks_per_batch=50")
    status = run_job(cfg)
    assert status["state"] == "failed", status
    assert "No space left on device" in status["error"] and ".h5" in status["error"]
    assert read_status(cell_key(cell_spec(cfg)).dir)["state"] == "failed"
    assert files_under(tmp_path, "*.tmp") == []
    parts = files_under(Path(cfg.store_dir), "*.parts/*/*.h5")
    assert parts, "the parts committed before the disk filled are kept"
    for part in parts:  # every file left is whole and checks out
        assert verify_file(part).state == OK
    assert files_under(Path(cfg.store_dir), "*.shards/*.h5") == []  # nothing published
    # Still full: the next run resumes the shard from its parts and fails as cleanly.
    again = run_job(tiny_cfg(tmp_path / "res"))
    assert again["state"] == "failed" and "No space left on device" in again["error"]
    assert files_under(tmp_path, "*.tmp") == []
    assert set(parts) <= set(files_under(Path(cfg.store_dir), "*.parts/*/*.h5"))
    monkeypatch.undo()
    assert run_job(tiny_cfg(tmp_path / "res"))["state"] == "done"
    assert files_under(Path(cfg.store_dir), "*.parts/*/*.h5") == []  # merged into the shard
    (shard,) = files_under(Path(cfg.store_dir), "*.shards/*.h5")
    assert verify_file(shard).state == OK


TMPFS_WRITER = """
import sys
from extract_fakes import FakeEncoder, make_sequences
from ptransfer.embed.extract import extract_to_store
from ptransfer.embed.store import EmbeddingStore
store = EmbeddingStore(sys.argv[1], {"model": "fake"}, 3, 64, level="residue")
n = extract_to_store(FakeEncoder(n_layers=3, dim=64), make_sequences(300, high=80), store,
                     toks_per_batch=500, progress=False, flush_bytes=20_000)
print("embedded", n)
"""


@pytest.fixture()
def small_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"cannot mount a tmpfs: {err}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True, timeout=30)


def test_real_full_tmpfs_is_a_clean_error_then_completes_after_space_is_freed(small_tmpfs):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(TESTS)])}
    path = small_tmpfs / "store.h5"
    command = [sys.executable, "-c", TMPFS_WRITER, str(path)]
    full = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert full.returncode == 1, full.stderr[-3000:]  # an exception, not -11 (SIGSEGV)
    assert "No space left on device" in full.stderr.splitlines()[-1]
    assert files_under(small_tmpfs, "*.tmp") == []
    subprocess.run(["mount", "-o", "remount,size=32m", str(small_tmpfs)], check=True, timeout=30)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    store = EmbeddingStore(path, {"model": "fake"}, 3, 64, level="residue")
    assert len(store) == 300 and files_under(small_tmpfs, "*.tmp") == []


def test_needed_space_counts_the_rows_once_and_a_bounded_merge(tmp_path):
    # existing 10 MB + new 3 MB + its merge (parts of at most 64 MiB are merged into one
    # file), plus the 2 % and 1 MiB margin.
    assert diskspace.needed_for_extraction(3e6, 10e6) == pytest.approx(16e6 * 1.02 + (1 << 20))
    # 100 GB of new rows: the parts become the shard's files, only 64 MiB may be copied.
    assert diskspace.needed_for_extraction(100e9, 0.0) == pytest.approx(
        (100e9 + 67_108_864) * 1.02 + (1 << 20))
    assert diskspace.needed_for_extraction(0.0, 10e6) == 0.0
    assert diskspace.expected_store_bytes(10, 3, 4, "float16") == 10 * 3 * 4 * 2


# ------------------------------------------------------------------ damage
def _zero_4k_of_layer(path: Path, layer: str = "layer_001") -> None:
    with h5py.File(path, "r") as handle:
        info = handle[layer].id.get_chunk_info(0)
    assert info.size > 4096 + 64
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset + 32)
        raw.write(b"\0" * 4096)


def test_zeroed_block_is_detected_by_a_run_and_by_verify_and_repaired(tmp_path):
    conf = tmp_path / "extra_conf" / "model"
    conf.mkdir(parents=True)
    (conf / "tiny_carp.yaml").write_text(json.dumps(model_config("carp", name="tiny_carp")))
    args = ["run", f"hydra.searchpath=[file://{conf.parent}]", "task=synthetic",
            "model=tiny_carp", "ablation=random_init", "results_dir=res",
            "extract.progress=false"]
    check(ptransfer(*args, cwd=tmp_path))
    (store,) = files_under(tmp_path / "res" / "embeddings", "*.shards/*.h5")  # the one shard
    assert check(ptransfer("store", "verify", "results_dir=res", cwd=tmp_path))
    _zero_4k_of_layer(store)
    proc = ptransfer(*args, "force=true", cwd=tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "StoreError" in out and f"delete {store.relative_to(tmp_path)} and re-run" in out
    # The failed re-run leaves the cell done: its own rows and predictions are intact.
    (status,) = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("status.json")]
    assert status["state"] == "done" and "stays done" in out
    verify = ptransfer("store", "verify", "results_dir=res", cwd=tmp_path)
    assert verify.returncode == 1
    assert "DAMAGED" in verify.stdout and "layer_001" in verify.stdout
    assert str(store.relative_to(tmp_path)) in verify.stdout
    # The advice, followed, ends: the deleted shard is missing (exit 1), a re-run redoes it
    # and publishes it with a fresh manifest, and verify then passes.
    store.unlink()
    verify = ptransfer("store", "verify", "results_dir=res", cwd=tmp_path)
    assert verify.returncode == 1 and "MISSING" in verify.stdout
    assert "re-run redoes it" in verify.stdout
    check(ptransfer(*args, "force=true", cwd=tmp_path))
    verify = check(ptransfer("store", "verify", "results_dir=res", cwd=tmp_path))
    assert "DAMAGED" not in verify and "MISSING" not in verify


def _task(sequences: list[str]) -> Task:
    splits = {"train": Split(sequences, np.zeros(len(sequences))),
              "val": Split(sequences[:3], np.zeros(3)), "test": Split(sequences[3:6], np.zeros(3))}
    return Task("t", "protein", "regression", splits, "d", "spearman")


def _format1_copy(source: Path, target: Path) -> None:
    """What ptransfer 0.x wrote: the same datasets without checksums, format_version 1."""
    with h5py.File(source, "r") as old, h5py.File(target, "w") as new:
        for name in old:
            new.create_dataset(name, data=old[name][...], chunks=True,
                               maxshape=(None,) + old[name].shape[1:])
        new.attrs.update(dict(old.attrs))
        new.attrs["format_version"] = 1


def test_format1_store_reads_verify_says_unchecked_and_nan_names_the_store(tmp_path):
    sequences = make_sequences(20)
    built = EmbeddingStore(tmp_path / "new.h5", {"model": "fake"}, 3, 4)
    extract_to_store(FakeEncoder(3, 4), sequences, built, progress=False)
    folder = tmp_path / "old"
    folder.mkdir()
    old = folder / "old.h5"
    _format1_copy(built._shard_files()[0], old)  # one file with the shard's datasets
    store = EmbeddingStore(old, {"model": "fake"}, 3, 4)
    np.testing.assert_array_equal(store.read_layer(2, sequences), built.read_layer(2, sequences))
    verdicts, _ = verify_dir(folder, out=lambda line: None)
    assert [v.state for v in verdicts] == [UNCHECKED]
    store.close()  # reads keep files open; HDF5 refuses a second, writing open in-process
    with h5py.File(old, "r+") as handle:  # damage no checksum can catch: a NaN
        handle["layer_002"][5, 1] = np.nan
    feats = StoreFeatures(_task(sequences), EmbeddingStore(old, {"model": "fake"}, 3, 4))
    bad = sorted(sequences, key=sequence_key)[5]  # file row 5: rows are sorted by key
    index = sequences.index(bad)
    with pytest.raises(StoreError, match=rf"{old}: layer 2 of split 'train' has NaN/inf at "
                       rf"feature row {index} \(sequence {index}, '{bad[:20]}"):
        feats.get(2, "train")
    assert feats.get(1, "train").shape == (20, 4)
    assert verify_file(old).state == DAMAGED and "NaN/inf" in verify_file(old).detail


# ------------------------------------------------------------------ time-based commits
def test_writer_commits_on_elapsed_time(tmp_path, monkeypatch):
    clock = {"now": 1000.0}
    monkeypatch.setattr(store_writer.time, "monotonic", lambda: clock["now"])
    store = EmbeddingStore(tmp_path / "s.h5", {"model": "fake"}, 3, 4, commit_seconds=60)
    rows = np.ones((3, 4), dtype=np.float32)
    with store.writer() as writer:
        writer.add("AAA", rows)
        clock["now"] += 59.0
        writer.add("CCC", rows)
        assert writer.parts.files() == []  # 59 s: below the interval, 96 bytes: below 64 MiB
        clock["now"] += 1.0
        writer.add("DDD", rows)
        assert len(writer.parts.files()) == 1  # 60 s since the writer started: committed
        clock["now"] += 30.0
        writer.add("EEE", rows)
        assert len(writer.parts.files()) == 1  # the clock restarted at the commit
        assert store._shard_files() == []  # parts are not published until the block ends
    assert len(store) == 4 and len(store._shard_files()) == 1
    assert not writer.parts.folder.exists()


def test_commit_seconds_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="store.commit_seconds must be > 0"):
        EmbeddingStore(tmp_path / "s.h5", {"model": "fake"}, 3, 4, commit_seconds=0)


def test_write_error_while_writing_rows_fails_cleanly(tmp_path, monkeypatch):
    import ptransfer.cell.run as cell

    def full_disk(frame, path):
        path.with_name(f"{path.name}.{os.getpid()}.0badc0de.tmp").write_text("half a row")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cell, "write_rows", full_disk)
    cfg = tiny_cfg(tmp_path / "res")
    status = run_job(cfg)
    assert status["state"] == "failed" and "No space left on device" in status["error"]
    assert read_status(cell_key(cell_spec(cfg)).dir)["state"] == "failed"
    assert files_under(tmp_path, "*.tmp") == []


def test_float16_pooled_storage_is_its_own_store_and_cell(tmp_path):
    cfgs = {dtype: tiny_cfg(tmp_path / "res", f"extract.pooled_dtype={dtype}")
            for dtype in ("float32", "float16")}
    for cfg in cfgs.values():
        assert run_job(cfg)["state"] == "done"
    assert cell_key(cell_spec(cfgs["float32"])).cell_id != cell_key(cell_spec(cfgs["float16"])).cell_id
    stores = {}
    for path in files_under(tmp_path / "res" / "embeddings", "*.h5"):
        with h5py.File(path, "r") as handle:
            stores[str(handle.attrs["dtype"])] = {k: handle[k][...] for k in handle}
    assert sorted(stores) == ["float16", "float32"]
    half, full = stores["float16"], stores["float32"]
    np.testing.assert_array_equal(half["keys"], full["keys"])
    for name in (k for k in full if k.startswith("layer_")):
        assert half[name].dtype == np.float16
        # The writer casts the same float32 features: exactly numpy's float16 rounding.
        np.testing.assert_array_equal(half[name], full[name].astype(np.float16))


def test_a_failed_forced_rerun_never_demotes_a_done_cell_whose_files_are_intact(
        tmp_path, monkeypatch):
    import ptransfer.cell.fit as fit

    cfg = tiny_cfg(tmp_path / "res")
    assert run_job(cfg)["state"] == "done"
    key = cell_key(cell_spec(cfg))
    before = read_status(key.dir)

    def boom(*args, **kwargs):
        raise RuntimeError("boom while fitting")

    monkeypatch.setattr(fit, "layer_fits", boom)
    forced = tiny_cfg(tmp_path / "res", "force=true")
    status = run_job(forced)  # the re-run fails before it rewrites anything
    assert status["state"] == "failed" and "boom while fitting" in status["error"]
    assert "stays done" in status["kept"]
    assert read_status(key.dir) == before and is_done(key)
    (key.dir / "rows.csv").write_text("not the rows the status records\n")
    status = run_job(forced)  # its own files are not intact: failed, as before
    assert status["state"] == "failed" and "kept" not in status
    assert read_status(key.dir)["state"] == "failed" and not is_done(key)
