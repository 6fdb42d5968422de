"""The HDF5 embedding store: schema, round trips, ordering, errors, repair."""

from __future__ import annotations

import hashlib
import json
import os
import time

import h5py
import numpy as np
import pytest

from ptransfer.embed.store import EmbeddingStore, StoreError, sequence_key, store_path

IDENTITY = {"model": "fake", "checkpoint": "final", "ablation": "pretrained", "seed": 0,
            "length_policy": "window"}
SEQUENCES = ["ACDEFG", "KLM", "PQRSTVWYAC", "MK", "GGGGGGGGGGGGGGGGGGGGGGGGG"]


@pytest.fixture(autouse=True)
def _torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def residue_rows(sequences, n_layers=3, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n_layers, len(s), dim)).astype(np.float32) for s in sequences]


def protein_rows(sequences, n_layers=3, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n_layers, dim)).astype(np.float32) for _ in sequences]


def make_store(path, level="protein", **kwargs):
    return EmbeddingStore(path, IDENTITY, n_layers=3, dim=4, level=level, **kwargs)


# ------------------------------------------------------------------ keys and paths
def test_sequence_key_is_sha256_hex():
    assert sequence_key("ACD") == hashlib.sha256(b"ACD").hexdigest()
    assert len(sequence_key("ACD")) == 64


def test_store_path_depends_on_identity_and_level(tmp_path):
    path = store_path(tmp_path, IDENTITY, "protein")
    assert path.parent == tmp_path / "fake" and path.suffix == ".h5" and len(path.stem) == 16
    reordered = dict(reversed(list(IDENTITY.items())))
    assert store_path(tmp_path, reordered, "protein") == path
    assert store_path(tmp_path, IDENTITY, "residue") != path
    assert store_path(tmp_path, {**IDENTITY, "seed": 1}, "protein") != path


def test_store_path_needs_model():
    with pytest.raises(ValueError, match="'model'"):
        store_path("/tmp", {"seed": 0}, "protein")


# ------------------------------------------------------------------ round trips
def test_protein_round_trip_in_requested_order(tmp_path):
    store = make_store(tmp_path / "p.h5")
    rows = protein_rows(SEQUENCES)
    store.append(SEQUENCES, rows)
    assert len(store) == 5 and "KLM" in store and "KLMN" not in store
    assert store.keys() == sorted(sequence_key(s) for s in SEQUENCES)
    order = [3, 0, 3, 4]  # repeats allowed
    out = store.read_layer(1, [SEQUENCES[i] for i in order])
    np.testing.assert_array_equal(out, np.stack([rows[i][1] for i in order]))
    np.testing.assert_array_equal(store.read_sequence("KLM"), rows[1])
    assert out.dtype == np.float32


def test_protein_read_of_few_rows_from_many(tmp_path):
    sequences = [f"M{'A' * i}" for i in range(40)]
    rows = protein_rows(sequences)
    store = make_store(tmp_path / "many.h5")
    store.append(sequences, rows)
    np.testing.assert_array_equal(store.read_layer(2, [sequences[7], sequences[3]]),
                                  np.stack([rows[7][2], rows[3][2]]))


def test_residue_round_trip_concatenates_in_order(tmp_path):
    store = make_store(tmp_path / "r.h5", level="residue")
    rows = residue_rows(SEQUENCES)
    store.append(SEQUENCES, rows)
    order = [4, 1, 0]
    out = store.read_layer(2, [SEQUENCES[i] for i in order])
    expected = np.concatenate([rows[i][2] for i in order]).astype(np.float16).astype(np.float32)
    assert out.shape == (25 + 3 + 6, 4)
    np.testing.assert_array_equal(out, expected)
    assert store.read_layer(2, ["KLM"], dtype=None).dtype == np.float16
    np.testing.assert_array_equal(store.read_sequence("KLM", dtype=None),
                                  rows[1].astype(np.float16))


def test_file_schema_is_readable_with_h5py_alone(tmp_path):
    store = make_store(tmp_path / "r.h5", level="residue", compression="gzip")
    rows = residue_rows(SEQUENCES)
    store.append(SEQUENCES, rows)
    with h5py.File(tmp_path / "r.h5", "r") as handle:  # the index file: one file, as before
        keys = [k.decode() for k in handle["keys"][...]]
        assert keys == sorted(keys) and handle["keys"].dtype == np.dtype("S64")  # one shard
        lengths, offsets = handle["lengths"][...], handle["offsets"][...]
        assert offsets[0] == 0 and np.array_equal(np.diff(offsets), lengths)
        row = keys.index(sequence_key("KLM"))
        assert lengths[row] == 3
        layer = handle["layer_001"]
        assert layer.shape == (sum(map(len, SEQUENCES)), 4) and layer.dtype == np.float16
        assert layer.is_virtual  # maps onto the shard's dataset: no feature is copied
        np.testing.assert_array_equal(layer[offsets[row]: offsets[row + 1]],
                                      rows[1][1].astype(np.float16))
        attrs = handle.attrs
        assert json.loads(attrs["identity"]) == IDENTITY
        assert attrs["level"] == "residue" and attrs["dtype"] == "float16"
        assert attrs["n_layers"] == 3 and attrs["dim"] == 4 and bool(attrs["complete"])
        for name in ("ptransfer_version", "torch_version", "fair_esm_version",
                     "sequence_models_version"):
            assert attrs[name]
        assert "layer_003" not in handle
        (shard_name, shard_bytes), = json.loads(attrs["sources"])
        assert list(handle["source"][...]) == [0] * 5
    shard = store.shard_dir / f"{shard_name}.h5"
    assert shard.stat().st_size == shard_bytes
    with h5py.File(shard, "r") as handle:  # the shard: chunked, compressed, checksummed
        layer = handle["layer_001"]
        assert layer.chunks is not None and layer.compression == "gzip" and layer.fletcher32
        assert [k.decode() for k in handle["keys"][...]] == keys
    manifest = json.loads((store.shard_dir / f"{shard_name}.json").read_text())
    assert manifest["keys"] == keys and manifest["n_rows"] == sum(map(len, SEQUENCES))
    assert manifest["bytes"] == shard_bytes
    assert manifest["sha256"] == hashlib.sha256(shard.read_bytes()).hexdigest()


def test_rows_read_the_same_whatever_the_insertion_order_and_shards(tmp_path):
    rows = residue_rows(SEQUENCES)
    first = make_store(tmp_path / "a.h5", level="residue")
    first.append(SEQUENCES, rows)
    second = make_store(tmp_path / "b.h5", level="residue", compression="lzf", flush_bytes=1)
    for i in (3, 1):
        second.append([SEQUENCES[i]], [rows[i]])
    with second.writer(flush_bytes=1) as writer:  # one part per row, merged into one shard
        for i in (4, 0, 2, 1):
            writer.add(SEQUENCES[i], rows[i])
    assert len(first._shard_files()) == 1 and len(second._shard_files()) == 3
    assert not list(second.shard_dir.glob("*.parts"))  # the parts became the shard
    reopened = make_store(tmp_path / "b.h5", level="residue", compression="lzf")
    for layer in range(3):
        np.testing.assert_array_equal(first.read_layer(layer, SEQUENCES, dtype=None),
                                      reopened.read_layer(layer, SEQUENCES, dtype=None))
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        order_a, order_b = np.argsort(a["keys"][...]), np.argsort(b["keys"][...])
        np.testing.assert_array_equal(a["keys"][...][order_a], b["keys"][...][order_b])
        np.testing.assert_array_equal(a["lengths"][...][order_a], b["lengths"][...][order_b])


def test_missing_is_unique_and_ordered(tmp_path):
    store = make_store(tmp_path / "p.h5")
    store.append(["KLM"], protein_rows(["KLM"]))
    assert store.missing(["MK", "KLM", "AC", "MK"]) == ["MK", "AC"]


def test_writer_skips_rows_already_present(tmp_path):
    store = make_store(tmp_path / "p.h5")
    rows = protein_rows(["KLM", "MK"])
    store.append(["KLM"], rows[:1])
    with store.writer() as writer:
        assert writer.add("KLM", rows[1]) is False
        assert writer.add("MK", rows[1]) is True
        assert writer.add("MK", rows[0]) is False
    np.testing.assert_array_equal(store.read_sequence("KLM"), rows[0])


def test_empty_writer_creates_an_empty_complete_store(tmp_path):
    store = make_store(tmp_path / "e.h5", level="residue")
    with store.writer():
        pass
    reopened = make_store(tmp_path / "e.h5", level="residue")
    assert len(reopened) == 0 and reopened.missing(["AC"]) == ["AC"]


def test_stale_index_is_reloaded_after_another_writer(tmp_path):
    reader = make_store(tmp_path / "p.h5")
    writer_store = make_store(tmp_path / "p.h5")
    rows = protein_rows(SEQUENCES)
    writer_store.append(SEQUENCES[:2], rows[:2])
    reader.refresh()
    writer_store.append(SEQUENCES[2:], rows[2:])  # rewrites the file, rows move
    np.testing.assert_array_equal(reader.read_layer(0, SEQUENCES), np.stack([r[0] for r in rows]))


# ------------------------------------------------------------------ bad input
def test_absent_sequence_is_a_key_error_naming_it_and_the_path(tmp_path):
    store = make_store(tmp_path / "p.h5")
    store.append(["KLM"], protein_rows(["KLM"]))
    with pytest.raises(KeyError, match=r"MKTAYIAKQRQISFVKSHFS\.\.\..*p\.h5"):
        store.read_layer(0, ["KLM", "MKTAYIAKQRQISFVKSHFSRQ"])


def test_layer_out_of_range(tmp_path):
    store = make_store(tmp_path / "p.h5")
    store.append(["KLM"], protein_rows(["KLM"]))
    with pytest.raises(IndexError, match="layer 3 out of range 0..2"):
        store.read_layer(3, ["KLM"])


@pytest.mark.parametrize(("field", "kwargs"), [
    ("identity", {"identity": {**IDENTITY, "seed": 1}}), ("n_layers", {"n_layers": 4}),
    ("dim", {"dim": 8}), ("level", {"level": "residue"}), ("dtype", {"dtype": "float16"}),
])
def test_reopening_with_a_different_identity_or_shape_fails(tmp_path, field, kwargs):
    make_store(tmp_path / "p.h5").append(["KLM"], protein_rows(["KLM"]))
    arguments = {"identity": IDENTITY, "n_layers": 3, "dim": 4, "level": "protein", **kwargs}
    with pytest.raises(StoreError, match=field):
        EmbeddingStore(tmp_path / "p.h5", **arguments)


def test_not_an_hdf5_file(tmp_path):
    (tmp_path / "p.h5").write_text("not hdf5")
    with pytest.raises(StoreError, match="cannot be read as HDF5"):
        make_store(tmp_path / "p.h5")


def test_file_not_marked_complete(tmp_path):
    with h5py.File(tmp_path / "p.h5", "w") as handle:
        handle.attrs["level"] = "protein"
    with pytest.raises(StoreError, match="not marked complete"):
        make_store(tmp_path / "p.h5")


def test_wrong_feature_shape_names_the_sequence(tmp_path):
    store = make_store(tmp_path / "r.h5", level="residue")
    with pytest.raises(ValueError, match=r"'KLM'.*shape \(3, 2, 4\).*expects \(3, 3, 4\)"):
        store.append(["KLM"], [np.zeros((3, 2, 4))])


def test_non_finite_features_are_rejected(tmp_path):
    store = make_store(tmp_path / "p.h5")
    bad = np.zeros((3, 4))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="'KLM'.*not finite"):
        store.append(["KLM"], [bad])


def test_float16_overflow_is_rejected(tmp_path):
    store = make_store(tmp_path / "r.h5", level="residue")
    with pytest.raises(ValueError, match="too large for the dtype"):
        store.append(["AC"], [np.full((3, 2, 4), 1e6)])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"level": "atom"}, "level"), ({"dtype": "float64"}, "dtype"),
    ({"compression": "zstd"}, "compression"), ({"n_layers": 0}, "n_layers"),
])
def test_bad_constructor_arguments(tmp_path, kwargs, message):
    arguments = {"identity": IDENTITY, "n_layers": 3, "dim": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        EmbeddingStore(tmp_path / "p.h5", **arguments)


def test_append_length_mismatch(tmp_path):
    with pytest.raises(ValueError, match="2 sequences but 1 features"):
        make_store(tmp_path / "p.h5").append(["AC", "KL"], protein_rows(["AC"]))


# ------------------------------------------------------------------ killed writers
def test_a_killed_writers_parts_are_not_rows_and_the_next_writer_adopts_them(tmp_path):
    path = tmp_path / "r.h5"
    store = make_store(path, level="residue", flush_bytes=1)
    rows = residue_rows(SEQUENCES)
    store.append(SEQUENCES[:2], rows[:2])
    # A writer of shard "shard-x" committed two parts, then died (KeyboardInterrupt stands
    # for the kill: the buffer is committed as a part, nothing is published).
    with pytest.raises(KeyboardInterrupt), store.writer(shard="shard-x") as writer:
        writer.add(SEQUENCES[2], rows[2])
        writer.add(SEQUENCES[3], rows[3])
        raise KeyboardInterrupt
    parts = store.shard_dir / "shard-x.parts"
    (dead,) = parts.glob("*/")  # the killed writer's own folder
    assert len(list(dead.glob("*.h5"))) == 2
    torn = dead / "00007.h5.tmp"
    torn.write_bytes(b"partial")  # a part being written when killed, ten minutes ago
    os.utime(torn, (time.time() - 601, time.time() - 601))
    reopened = make_store(path, level="residue")
    assert len(reopened) == 2 and reopened.missing(SEQUENCES) == SEQUENCES[2:]
    assert not (store.shard_dir / "shard-x.h5").exists()  # nothing partial is published
    with reopened.writer(shard="shard-x") as writer:
        assert writer.has(SEQUENCES[2]) and writer.has(SEQUENCES[3])  # adopted, not redone
        assert writer.add(SEQUENCES[2], rows[2]) is False
        writer.add(SEQUENCES[4], rows[4])
    assert len(reopened) == 5 and not parts.exists()
    for i, sequence in enumerate(SEQUENCES):
        np.testing.assert_array_equal(reopened.read_sequence(sequence, dtype=None),
                                      rows[i].astype(np.float16))


def test_a_shard_published_without_its_manifest_is_read_and_gets_one(tmp_path):
    path = tmp_path / "p.h5"
    store = make_store(path)
    rows = protein_rows(SEQUENCES)
    store.append(SEQUENCES[:3], rows[:3], shard="shard-a")
    (store.shard_dir / "shard-a.json").unlink()  # killed between the two publications
    path.unlink()  # and before the index file was written
    reopened = make_store(path)
    assert len(reopened) == 3 and (store.shard_dir / "shard-a.json").exists()
    np.testing.assert_array_equal(reopened.read_layer(1, SEQUENCES[:3]),
                                  np.stack([r[1] for r in rows[:3]]))


def test_a_sequence_in_two_shards_reads_from_the_first_by_name(tmp_path):
    # Two writers that embedded the same sequence (no claim): both shards stay valid; the
    # view always reads the first, so a race never changes the numbers read.
    path = tmp_path / "p.h5"
    store = make_store(path)
    rows = protein_rows(["KLM", "MK"])
    store.append(["KLM"], rows[:1], shard="shard-b")
    store.append(["KLM", "MK"], [rows[1], rows[1]], shard="shard-c")  # KLM present: skipped
    other = make_store(tmp_path / "q.h5")
    other.append(["KLM", "MK"], [rows[1], rows[1]], shard="shard-c")
    (store.shard_dir / "shard-a.h5").hardlink_to(other.shard_dir / "shard-c.h5")
    reopened = make_store(path)
    np.testing.assert_array_equal(reopened.read_sequence("KLM"), rows[1])  # shard-a first
    np.testing.assert_array_equal(reopened.read_sequence("MK"), rows[1])
    assert len(reopened) == 2


def test_a_legacy_single_file_store_reads_and_moves_into_the_shards_on_first_write(tmp_path):
    path = tmp_path / "p.h5"
    rows = protein_rows(SEQUENCES)
    built = make_store(tmp_path / "built.h5")
    built.append(SEQUENCES[:3], rows[:3])
    (shard,) = built._shard_files()
    import shutil
    shutil.copy(shard, path)  # what ptransfer 0.1 wrote: one main file, same schema
    legacy = make_store(path)
    assert len(legacy) == 3
    np.testing.assert_array_equal(legacy.read_layer(2, SEQUENCES[:3]),
                                  np.stack([r[2] for r in rows[:3]]))
    legacy.append(SEQUENCES[3:], rows[3:])
    assert len(legacy) == 5 and len(legacy._shard_files()) == 2
    assert any(p.name.startswith("legacy-") for p in legacy._shard_files())
    with h5py.File(path, "r") as handle:
        assert handle.attrs["layout"] == "index" and len(handle["keys"]) == 5
    np.testing.assert_array_equal(make_store(path).read_layer(0, SEQUENCES),
                                  np.stack([r[0] for r in rows]))


@pytest.mark.parametrize("level", ["protein", "residue"])
def test_reading_no_sequences_gives_an_empty_matrix(tmp_path, level):
    store = make_store(tmp_path / "e.h5", level=level)
    rows = residue_rows(SEQUENCES) if level == "residue" else protein_rows(SEQUENCES)
    store.append(SEQUENCES, rows)
    assert store.read_layer(0, []).shape == (0, 4)


def test_residue_read_of_scattered_rows_with_repeats(tmp_path):
    sequences = [f"M{'K' * i}" for i in range(30)]
    rows = residue_rows(sequences)
    store = make_store(tmp_path / "s.h5", level="residue")
    store.append(sequences, rows)
    order = [29, 3, 3, 17, 0, 28, 4]
    expected = np.concatenate([rows[i][1] for i in order]).astype(np.float16)
    np.testing.assert_array_equal(store.read_layer(1, [sequences[i] for i in order], dtype=None),
                                  expected)
