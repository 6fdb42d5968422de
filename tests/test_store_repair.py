"""A store repairs itself: shards published without a copy of their parts, a deleted or damaged
shard file reported by ``store verify`` and extracted again with a fresh manifest, a damaged
index file rebuilt by itself (issue 27 items 3-4; issue 28 items 5-6)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import main_output
from extract_fakes import FakeEncoder, make_sequences, reference_features

import ptransfer.embed.diskspace as diskspace
from ptransfer.embed.extract import extract_to_store
from ptransfer.embed.manifests import file_sha256, make_manifest, read_manifest, write_manifest
from ptransfer.embed.store import EmbeddingStore, sequence_key
from ptransfer.embed.verify import DAMAGED, MISSING, OK, exit_status, verify_dir

N_LAYERS, DIM = 3, 4


def _store(root: Path, level: str = "protein") -> EmbeddingStore:
    return EmbeddingStore(root / "fake" / "s.h5", {"model": "fake"}, N_LAYERS, DIM, level=level,
                          flush_bytes=1)  # a part per committed batch: several parts a shard


def _layers(store: EmbeddingStore, sequences: list[str]) -> list[np.ndarray]:
    return [store.read_layer(layer, sequences, dtype=None) for layer in range(N_LAYERS)]


def _verdicts(root: Path) -> dict[Path, str]:
    verdicts, _ = verify_dir(root, out=lambda line: None)
    return {v.path: v.state for v in verdicts}


@pytest.fixture()
def several_files(tmp_path, monkeypatch):
    """A residue-level store of two shards, each published as several part files (the
    merge of small parts turned off), and its rows as first written."""
    monkeypatch.setattr(diskspace, "MERGE_BYTES", 0)
    sequences = make_sequences(24)
    store = _store(tmp_path, "residue")
    extract_to_store(FakeEncoder(N_LAYERS, DIM), sequences, store, toks_per_batch=60,
                     shard_tokens=250, progress=False)
    return store, sequences, _layers(store, sequences)


def test_a_shard_of_several_parts_is_published_without_copying_them(tmp_path, monkeypatch):
    monkeypatch.setattr(diskspace, "MERGE_BYTES", 0)
    store = _store(tmp_path, "residue")
    sequences = make_sequences(8)
    rows = [reference_features(s, N_LAYERS, DIM).astype(np.float32) for s in sequences]
    with store.writer(shard="shard-0000000000000001") as writer:
        for sequence, row in zip(sequences, rows):
            writer.add(sequence, row)  # n_layers x L x D; a part each (flush_bytes=1)
        inodes = sorted(p.stat().st_ino for p in writer.parts.files())
    folder = store.shard_dir
    linked = sorted(folder.glob("shard-0000000000000001.files/*/*.h5"))
    assert len(inodes) == 8 and sorted(p.stat().st_ino for p in linked) == inodes  # no copy
    manifest = read_manifest(folder / "shard-0000000000000001.json")
    assert [f.file for f in manifest.files] == [str(p.relative_to(folder)) for p in linked]
    assert all(f.sha256 == file_sha256(folder / f.file) for f in manifest.files)
    assert manifest.sha256 == file_sha256(folder / "shard-0000000000000001.h5")
    assert not list(folder.glob("*.parts/*/*.h5"))  # the parts' own names are gone
    # ptransfer, h5py through the shard file, and h5py through the index file agree.
    expected = [np.concatenate([row[layer] for row in rows]).astype(np.float16)
                for layer in range(N_LAYERS)]
    reopened = _store(tmp_path, "residue")
    for got, want in zip(_layers(reopened, sequences), expected):
        np.testing.assert_array_equal(got, want)
    for path in (folder / "shard-0000000000000001.h5", store.path):
        with h5py.File(path, "r") as handle:
            keys = list(handle["keys"][...].astype(str))
            offsets = handle["offsets"][...]
            for layer in range(N_LAYERS):
                data = handle[f"layer_{layer:03d}"][...]
                order = [keys.index(sequence_key(s)) for s in sequences]
                rows = np.concatenate([data[offsets[i]: offsets[i + 1]] for i in order])
                np.testing.assert_array_equal(rows, expected[layer])
    assert set(_verdicts(tmp_path).values()) == {OK}


def test_a_deleted_shard_is_missing_for_verify_then_redone_with_a_fresh_manifest(tmp_path,
                                                                                 capsys):
    sequences = make_sequences(12)
    store = _store(tmp_path)
    extract_to_store(FakeEncoder(N_LAYERS, DIM), sequences, store, progress=False)
    expected = _layers(store, sequences)
    (shard,) = store._shard_files()
    shard.unlink()  # the store's only shard file
    code, out = main_output(capsys, "store", "verify", str(tmp_path))
    assert code == 1
    assert f"MISSING   {shard}: missing (listed by {shard.stem}.json): re-run redoes it" in out
    assert "1 missing" in [line for line in out.splitlines() if " store files " in line][-1]
    again = _store(tmp_path)
    assert again.missing(sequences) == sequences  # its rows read as missing
    assert extract_to_store(FakeEncoder(N_LAYERS, DIM), sequences, again,
                            progress=False) == len(sequences)
    assert read_manifest(shard.with_suffix(".json")).sha256 == file_sha256(shard)  # fresh
    for got, want in zip(_layers(_store(tmp_path), sequences), expected):
        np.testing.assert_array_equal(got, want)
    code, out = main_output(capsys, "store", "verify", str(tmp_path))
    assert code == 0 and "DAMAGED" not in out and "MISSING" not in out


def test_a_truncated_shard_is_left_out_then_written_again(tmp_path):
    sequences = make_sequences(12)
    store = _store(tmp_path)
    extract_to_store(FakeEncoder(N_LAYERS, DIM), sequences, store, progress=False)
    expected = _layers(store, sequences)
    (shard,) = store._shard_files()
    with open(shard, "r+b") as raw:
        raw.truncate(shard.stat().st_size // 2)
    assert _verdicts(tmp_path)[shard] == DAMAGED
    again = _store(tmp_path)  # opens: the broken shard is left out, not an error
    assert again.missing(sequences) == sequences
    with pytest.raises(KeyError, match=rf"shard {shard.stem} is broken \(.*bytes but its "
                                       "manifest"):
        again.read_layer(0, sequences[:1])
    extract_to_store(FakeEncoder(N_LAYERS, DIM), sequences, again, progress=False)
    for got, want in zip(_layers(_store(tmp_path), sequences), expected):
        np.testing.assert_array_equal(got, want)
    assert set(_verdicts(tmp_path).values()) == {OK}


def test_a_missing_part_file_is_reported_and_its_shard_redone(tmp_path, several_files):
    store, sequences, expected = several_files
    parts = sorted(store.shard_dir.glob("*.files/*/*.h5"))
    assert len(store._shard_files()) >= 2 and len(parts) > len(store._shard_files())
    parts[1].unlink()
    verdicts = _verdicts(tmp_path)
    assert verdicts[parts[1]] == MISSING and exit_status(
        verify_dir(tmp_path, out=lambda line: None)[0]) == 1
    shard = parts[1].parent.parent.name[: -len(".files")]
    again = _store(tmp_path, "residue")
    lost = [s for s in sequences if not again._view.index.get(sequence_key(s))]
    assert lost and shard in again._view.broken
    extract_to_store(FakeEncoder(N_LAYERS, DIM), sequences, again, toks_per_batch=60,
                     shard_tokens=250, progress=False)
    for got, want in zip(_layers(_store(tmp_path, "residue"), sequences), expected):
        np.testing.assert_array_equal(got, want)
    assert set(_verdicts(tmp_path).values()) == {OK}
    assert len(list(store.shard_dir.glob(f"{shard}.files/*"))) == 1  # the old copy removed


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_index_file_is_rebuilt_by_itself(tmp_path, several_files, damage):
    store, sequences, expected = several_files
    size = store.path.stat().st_size
    with open(store.path, "r+b") as raw:
        if damage == "truncate":
            raw.truncate(size // 3)
        else:
            raw.seek(0)
            raw.write(os.urandom(512))
    assert _verdicts(tmp_path)[store.path] == DAMAGED
    damaged = store.path.read_bytes()
    read_only = EmbeddingStore(store.path, {"model": "fake"}, N_LAYERS, DIM, level="residue",
                               read_only=True)  # reads from the shards, writes nothing
    assert store.path.read_bytes() == damaged
    for got, want in zip(_layers(read_only, sequences), expected):
        np.testing.assert_array_equal(got, want)
    again = _store(tmp_path, "residue")  # a writable reader rewrites it at once
    assert extract_to_store(FakeEncoder(N_LAYERS, DIM), sequences, again, progress=False) == 0
    with h5py.File(store.path, "r") as handle:
        assert handle.attrs["layout"] == "index" and len(handle["keys"]) == len(sequences)
    assert set(_verdicts(tmp_path).values()) == {OK}


def test_a_stale_manifest_is_replaced_but_never_a_current_one(tmp_path):
    folder = tmp_path / "s.h5.shards"
    folder.mkdir()
    shard = folder / "shard-a.h5"
    shard.write_bytes(b"new file")
    old = make_manifest(shard, "shard-a", ["k"], [3], "protein")
    old.sha256 = "0" * 64  # what a deleted earlier file of this name had
    (folder / "shard-a.json").write_text(old.to_json())
    current = make_manifest(shard, "shard-a", ["k"], [3], "protein")
    # Without the published file's inode (a reader adopting a manifest) nothing is replaced.
    assert not write_manifest(folder, current)
    assert read_manifest(folder / "shard-a.json").sha256 == "0" * 64
    # A writer that published another file under that name meanwhile leaves it too.
    assert not write_manifest(folder, current, shard.stat().st_ino + 1)
    assert write_manifest(folder, current, shard.stat().st_ino)  # the writer of this file
    assert read_manifest(folder / "shard-a.json").sha256 == file_sha256(shard)
    twin = make_manifest(shard, "shard-a", ["k"], [3], "protein")
    twin.extra = {"adopted": True}
    assert not write_manifest(folder, twin, shard.stat().st_ino)  # the same SHA-256: kept
    assert "adopted" not in json.loads((folder / "shard-a.json").read_text())


def test_a_writer_killed_after_publishing_a_repaired_shard_leaves_no_stale_manifest(
        tmp_path, monkeypatch):
    # The shard file was deleted; its re-extraction is killed between publishing the file
    # and writing its manifest. The old manifest was removed before the file appeared: the
    # new file reads without one (its next reader that lists the shards writes it), and
    # verify passes; a stale manifest left there would call the new file damaged.
    import ptransfer.embed.publication as publication

    sequences = make_sequences(12)
    store = _store(tmp_path)
    extract_to_store(FakeEncoder(N_LAYERS, DIM), sequences, store, progress=False)
    (shard,) = store._shard_files()
    shard.unlink()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(publication, "write_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        extract_to_store(FakeEncoder(N_LAYERS, DIM), sequences, _store(tmp_path), progress=False)
    monkeypatch.undo()
    assert shard.exists() and not shard.with_suffix(".json").exists()
    assert len(_store(tmp_path)) == len(sequences)
    assert set(_verdicts(tmp_path).values()) == {OK}
    store.path.unlink()  # no index file: the reader lists the shards and adopts this one
    assert len(_store(tmp_path)) == len(sequences)
    assert read_manifest(shard.with_suffix(".json")).sha256 == file_sha256(shard)
