"""store.retain=until_done: a shared store lives until its last reader is done.

A 3-cell sweep through the CLI (one tiny encoder, three cells reading its store), the
last-reader rule in-process for any finishing order (parallel launchers), and the plan's
total / peak disk lines against hand-computed timelines.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import check, ptransfer
from test_store_safety import tiny_cfg
from tiny_models import tiny_esm2_searchpath

from ptransfer.analysis.cell_files import file_record
from ptransfer.analysis.predictions import PREDICTIONS_FILE
from ptransfer.analysis.rows import ROWS_FILE
from ptransfer.cell.key import cell_key
from ptransfer.cell.spec import cell_spec
from ptransfer.cell.status import write_status
from ptransfer.embed.claims import Claim
from ptransfer.embed.shards import shard_folder
from ptransfer.sweep.plan import PlannedCell
from ptransfer.sweep.retention import disk_lines, retire_if_unread, store_group, write_readers

SUBSAMPLES = ("null", "{train:200}", "{train:300}")


@pytest.fixture()
def tiny_conf(tmp_path):
    return tiny_esm2_searchpath(tmp_path)


def _cell_args(tiny_conf: str, *extra: str) -> list[str]:
    return [tiny_conf, "task=synthetic", "model=tiny_esm2", "ablation=random_init", "seed=0",
            "results_dir=res", "extract.progress=false", "store.retain=until_done", *extra]


def test_three_cell_sweep_keeps_the_shared_store_until_its_last_reader(tmp_path, tiny_conf):
    out = check(ptransfer("run", "-m", *_cell_args(tiny_conf, f"subsample={','.join(SUBSAMPLES)}"),
                          cwd=tmp_path))
    assert "3 run, 0 skipped" in out
    lines = out.splitlines()
    extracting = [line for line in lines if "extracting" in line]
    # Phase 1 extracted the store once (one shard: 600 sequences); the three phase-2 cells
    # found every row there and loaded no model.
    assert len(extracting) == 1 and "extracting 600 sequences" in extracting[0]
    assert sum("store complete: tiny_esm2 is not loaded" in line for line in lines) == 3
    kept = [i for i, line in enumerate(lines) if "readers are not done" in line]
    deleted = [i for i, line in enumerate(lines) if "store.retain=until_done: deleted" in line]
    assert ["2 of its 3" in lines[kept[0]], "1 of its 3" in lines[kept[1]]] == [True, True]
    assert len(deleted) == 1 and kept[1] < deleted[0]
    assert "all 3 readers done" in lines[deleted[0]]
    assert list((tmp_path / "res" / "embeddings").rglob("*.h5")) == []
    assert not (tmp_path / "res" / "embeddings" / "readers").exists()
    assert len(list((tmp_path / "res" / "cells").glob(f"*/{ROWS_FILE}"))) == 3
    # A retired store asked for again is simply re-extracted (then retired: its only reader).
    again = check(ptransfer("run", *_cell_args(tiny_conf, "force=true"), cwd=tmp_path))
    assert "extracting 600 sequences" in again and "deleted" in again
    # The default policy keeps it: its index file and its one shard.
    check(ptransfer("run", *_cell_args(tiny_conf, "force=true", "store.retain=all"),
                    cwd=tmp_path))
    stores = list((tmp_path / "res" / "embeddings").rglob("*.h5"))
    assert len(stores) == 2 and sum(p.parent.name.endswith(".shards") for p in stores) == 1


def _mark_done(cfg) -> None:
    key = cell_key(cell_spec(cfg))
    key.dir.mkdir(parents=True, exist_ok=True)
    (key.dir / ROWS_FILE).write_text("x\n")
    (key.dir / PREDICTIONS_FILE).write_bytes(b"x")  # a done cell has rows and predictions
    files = {name: file_record(key.dir / name, 1) for name in (ROWS_FILE, PREDICTIONS_FILE)}
    write_status(key.dir, state="done", cell_id=key.cell_id, files=files)  # ... as recorded


def _make_store(cfg) -> Path:
    _, paths = store_group(cell_spec(cfg))
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    paths[0].write_bytes(b"store")
    return paths[0]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_last_reader_deletes_whatever_the_finishing_order(tmp_path, order):
    cells = [tiny_cfg(tmp_path / "res", f"subsample={s}", "store.retain=until_done")
             for s in SUBSAMPLES]
    groups = write_readers(str(tmp_path / "sweep"), [cell_spec(c) for c in cells])
    assert [len(readers) for readers in groups.values()] == [3]
    store = _make_store(cells[0])
    for step, index in enumerate(order):
        _mark_done(cells[index])
        deleted = retire_if_unread(cells[index])
        assert store.exists() == (step < 2)
        assert deleted == ([] if step < 2 else [store.absolute()])


def test_a_store_being_written_is_not_deleted(tmp_path):
    cfg = tiny_cfg(tmp_path / "res", "store.retain=until_done")
    store = _make_store(cfg)
    _mark_done(cfg)
    folder = shard_folder(store)
    folder.mkdir()
    writer = Claim(folder / "shard-x.claim")  # another process writing a shard of it
    assert writer.try_acquire()
    assert retire_if_unread(cfg) == []
    assert store.exists()
    writer.release()
    assert retire_if_unread(cfg) == [store.absolute()] and not store.exists()
    assert not folder.exists()


def test_failed_reader_keeps_the_store_and_retain_all_never_deletes(tmp_path):
    cells = [tiny_cfg(tmp_path / "res", f"subsample={s}", "store.retain=until_done")
             for s in SUBSAMPLES[:2]]
    write_readers(str(tmp_path / "sweep"), [cell_spec(c) for c in cells])
    store = _make_store(cells[0])
    _mark_done(cells[0])
    key = cell_key(cell_spec(cells[1]))
    write_status(key.dir, state="failed", cell_id=key.cell_id)
    assert retire_if_unread(cells[0]) == [] and store.exists()
    keep_all = tiny_cfg(tmp_path / "res")
    _mark_done(keep_all)
    assert retire_if_unread(keep_all) == [] and store.exists()


def test_bad_policy_names_the_key(tmp_path, tiny_conf):
    proc = ptransfer("run", *_cell_args(tiny_conf, "store.retain=sometimes"), cwd=tmp_path)
    assert proc.returncode != 0
    assert "store.retain must be one of ['all', 'until_done'], got 'sometimes'" in (
        proc.stdout + proc.stderr)


def _planned(name: str, identity: str, dataset: str, gb: float) -> PlannedCell:
    key = json.dumps([dataset, {"model": identity}], sort_keys=True)
    return PlannedCell([], name, False, None, gb * 1e9, 0.0, key)


def test_plan_peak_is_the_largest_store_groups_under_way_together():
    # Identity A on gb1 (10 GB) and aav (20 GB), B on gb1 (5) and aav (7): 42 GB in all.
    grouped = [_planned("a1", "A", "gb1", 10), _planned("a2", "A", "aav", 20),
               _planned("b1", "B", "gb1", 5), _planned("b2", "B", "aav", 7)]
    # One store group under way at a time (basic launcher): A (30), then B (12): peak 30.
    assert disk_lines(grouped)[0] == ("store: retain=all keeps ~42.0 GB (the total); "
                                      "retain=until_done peaks at ~30.0 GB")
    # The sweep order does not interleave stores: a group is extracted whole before its
    # readers run (it was 35 GB here when cells extracted as they ran).
    interleaved = [grouped[0], grouped[2], grouped[1], grouped[3]]
    assert "retain=until_done peaks at ~30.0 GB" in disk_lines(interleaved)[0]
    # Two groups under way at once (two parallel workers): A and B together.
    assert "retain=until_done peaks at ~42.0 GB" in disk_lines(grouped, 2)[0]
    assert "at most 2 store group(s) under way at once" in disk_lines(grouped, 2)[1]
    # Three groups, two at once: the two largest together (any two may be under way).
    three = [*grouped, _planned("c1", "C", "gb1", 25)]
    assert "retain=until_done peaks at ~55.0 GB" in disk_lines(three, 2)[0]
    # A second cell reading A's gb1 rows adds nothing; streaming/one-hot cells hold no store.
    extra = [grouped[0], _planned("a1b", "A", "gb1", 10),
             PlannedCell([], "onehot", False, None, 0.0, 0.0, "onehot")]
    assert "keeps ~10.0 GB (the total); retain=until_done peaks at ~10.0 GB" in disk_lines(extra)[0]


def test_plan_prints_both_policies_for_a_small_sweep(tmp_path, tiny_conf):
    args = [a for a in _cell_args(tiny_conf) if not a.startswith("model=")]
    out = check(ptransfer("plan", *args, "model=tiny_esm2,onehot", cwd=tmp_path))
    # synthetic: 600 sequences x 3 layers x 32 dims x 4 bytes (plan's TASK_SIZES, tiny ESM-2).
    assert f"retain=all keeps ~{600 * 3 * 32 * 4 / 1e6:.2f} MB" in out
    assert "retain=until_done peaks at" in out and "at most 1 store group(s)" in out
