"""``ptransfer store verify``: what is and is not a store, one file at a time, and shards.

A user's own HDF5 file lying under the store folder is not a ptransfer store: it is listed as
such and skipped, never called damaged (nor advised for deletion). A single store file or
shard can be verified by its path.
"""

from __future__ import annotations

import h5py
import numpy as np
from cli_helpers import ptransfer
from extract_fakes import FakeEncoder, make_sequences

from ptransfer.embed.extract import extract_to_store
from ptransfer.embed.store import EmbeddingStore
from ptransfer.embed.verify import DAMAGED, FOREIGN, OK, verify_dir


def _store(folder):
    store = EmbeddingStore(folder / "fake" / "s.h5", {"model": "fake"}, 3, 4)
    extract_to_store(FakeEncoder(3, 4), make_sequences(12), store, progress=False)
    return store


def _foreign(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:  # someone's own data: no ptransfer attributes
        handle.create_dataset("coords", data=np.arange(12.0).reshape(4, 3))
        handle.attrs["author"] = "me"
    return path


def test_a_foreign_hdf5_file_is_skipped_not_damaged(tmp_path):
    _store(tmp_path)
    mine = _foreign(tmp_path / "fake" / "my_coordinates.h5")
    lines = []
    verdicts, _ = verify_dir(tmp_path, out=lines.append)
    by_path = {v.path: v for v in verdicts}
    assert by_path[mine].state == FOREIGN
    assert "not a ptransfer store" in by_path[mine].detail
    assert "delete" not in by_path[mine].detail
    assert all(v.state == OK for p, v in by_path.items() if p != mine)
    assert not any(v.state == DAMAGED for v in verdicts)
    assert any(line.startswith("NOT A STORE") and str(mine) in line for line in lines)
    assert "1 not a ptransfer store" in lines[-1]


def test_cli_verifies_a_single_file_and_exits_0_for_a_foreign_file(tmp_path):
    store = _store(tmp_path / "embeddings")
    proc = ptransfer("store", "verify", str(store.path), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "no embedding store folder" not in out
    assert f"OK        {store.path}" in out
    mine = _foreign(tmp_path / "mine.h5")
    proc = ptransfer("store", "verify", str(mine), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not a ptransfer store" in proc.stdout and "DAMAGED" not in proc.stdout
