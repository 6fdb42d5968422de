"""A published shard: its files, its manifest, whether it is whole, publishing and repairing it.

A shard ``<shard>.h5`` in a store's shard folder (``embed.shards``) is published in one of two
forms, both without copying the rows its writer committed (``embed.store_writer``):

- **one file**: the writer's only part, linked as ``<shard>.h5``;
- **several files**: the parts linked (hard links, no copy) as
  ``<shard>.files/<writer>/0000.h5 ...``, and ``<shard>.h5`` a small file with the shard's
  ``keys``, ``lengths`` (``offsets``) and each ``layer_NNN`` as an HDF5 virtual dataset over
  the parts (relative paths), attribute ``layout = "files"``: h5py alone reads it as one
  shard; ptransfer reads the parts directly (``embed.store_index``).

``<shard>.h5`` appears last, by ``os.link`` (atomic; the first publication wins), so readers
see all of a shard or none of it. Then its **manifest** ``<shard>.json``: keys, lengths, and
the size and SHA-256 of ``<shard>.h5`` and of every part file (``files``). A manifest left by
an earlier file of the same name (a shard deleted, or found damaged, and extracted again) is
stale: it is removed before the new file is published and replaced if it reappears, so a
repaired shard always has a fresh manifest.

A shard is **broken** when a file it needs is missing or has another size than its manifest
records (``shard_contents`` raises ``BrokenShard``): readers leave its rows out (they read as
missing, so the next extraction writes them again), and the writer that claims it retires it
first (``retire_shard``: its files and manifest are removed) and publishes it afresh.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ptransfer.embed.claims import STALE_S, Claim, holder, read_claim
from ptransfer.embed.manifests import (
    FileRecord,
    drop_orphan_manifest,
    file_sha256,
    make_manifest,
    manifest_path,
    read_manifest,
    write_manifest,
)
from ptransfer.embed.shards import CLAIM_SUFFIX, publish, shard_folder
from ptransfer.embed.store_files import StoreError, layer_name, open_store_file

log = logging.getLogger(__name__)

FILES_SUFFIX = ".files"  # <shard>.files/<writer>/<k>.h5: the part files of a shard of several
FILES_LAYOUT = "files"  # the ``layout`` attribute of a shard file over part files


class BrokenShard(StoreError):
    """A published shard missing a file, or with a file of another size than recorded."""


# ---------------------------------------------------------------- what a shard holds
@dataclass
class ShardFile:
    """One file of a published shard holding rows: the shard file itself, or a part."""

    path: Path
    keys: list[str]
    lengths: np.ndarray  # N int64
    n_bytes: int


def shard_contents(folder: Path, name: str, store=None, writable: bool = False
                   ) -> list[ShardFile]:
    """The files holding shard ``name``'s rows, checked present with the sizes recorded.

    From the manifest when there is one; otherwise from ``<shard>.h5`` itself (attributes
    checked against ``store`` when given; its manifest is then written when ``writable``).
    Raises BrokenShard when a file is missing, has another size, or cannot be read.
    """
    path = folder / f"{name}.h5"
    manifest_file = manifest_path(folder, name)
    manifest = None
    if manifest_file.exists():
        with contextlib.suppress(StoreError):  # unreadable: derived data, read the shard
            manifest = read_manifest(manifest_file)
    if manifest is not None:
        _check_size(path, manifest.n_bytes, manifest_file)
        records = manifest.files or [FileRecord(path.name, manifest.n_bytes, manifest.sha256,
                                                len(manifest.keys), manifest.n_rows)]
        for record in records:
            _check_size(folder / record.file, record.n_bytes, manifest_file)
        return _split(folder, records, manifest.keys, np.asarray(manifest.lengths, np.int64))
    if not path.exists():
        raise BrokenShard(f"{path}: missing")
    try:
        handle = open_store_file(path)
    except StoreError as err:
        raise BrokenShard(str(err)) from err
    with handle:
        if store is not None:
            store.check_file(handle, path)  # another store's file: an error, not damage
        try:
            keys = [k.decode("ascii") for k in handle["keys"][...]]
            lengths = handle["lengths"][...].astype(np.int64)
            records = _stub_records(handle, path, len(keys), int(path.stat().st_size))
        except (OSError, KeyError, ValueError) as err:
            raise BrokenShard(f"{path}: cannot be read ({err})") from err
    for record in records:
        if not (folder / record.file).is_file():
            raise BrokenShard(f"{folder / record.file}: missing (a part file of {path})")
    if writable:  # published without its manifest (writer killed in between): add it
        _adopt_manifest(folder, name, path, keys, lengths, records, store)
    return _split(folder, records, keys, lengths)


def _check_size(path: Path, expected: int, manifest_file: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BrokenShard(f"{path}: missing (listed by {manifest_file.name})") from None
    if size != expected:
        raise BrokenShard(f"{path}: {size} bytes but its manifest {manifest_file.name} records "
                          f"{expected}")


def _stub_records(handle, path: Path, n_keys: int, size: int) -> list[FileRecord]:
    """The part files a shard file maps (from its attributes); itself when it holds rows."""
    if handle.attrs.get("layout") != FILES_LAYOUT:
        return [FileRecord(path.name, size, "", n_keys, -1)]
    return [FileRecord(str(f), -1, "", int(n), int(rows))
            for f, n, rows in json.loads(handle.attrs["files"])]


def _split(folder: Path, records: list[FileRecord], keys: list[str], lengths: np.ndarray
           ) -> list[ShardFile]:
    out, start = [], 0
    for record in records:
        end = start + record.n_sequences
        path = folder / record.file
        size = record.n_bytes if record.n_bytes >= 0 else path.stat().st_size
        out.append(ShardFile(path, list(keys[start:end]), lengths[start:end], size))
        start = end
    return out


def _adopt_manifest(folder: Path, name: str, path: Path, keys, lengths, records, store) -> None:
    level = store.level if store is not None else "protein"
    files = [] if records[0].file == path.name else [
        _record(folder / r.file, folder, r.n_sequences, r.n_rows) for r in records]
    try:
        write_manifest(folder, make_manifest(path, name, keys, list(lengths), level,
                                             {"adopted": True}, files))
    except OSError as err:
        log.debug("could not write the manifest of %s: %s", path, err)


def _record(path: Path, folder: Path, n_sequences: int, n_rows: int) -> FileRecord:
    return FileRecord(str(path.relative_to(folder)), path.stat().st_size, file_sha256(path),
                      n_sequences, n_rows)


def shard_state(folder: Path, name: str, store=None) -> str:
    """``absent``, ``whole`` (published, every file present as recorded) or ``broken``."""
    if not (folder / f"{name}.h5").exists():
        return "absent"
    try:
        shard_contents(folder, name, store)
    except BrokenShard:
        return "broken"
    return "whole"


def claim_or_wait(folder: Path, name: str, store=None, poll_s: float = 2.0) -> Claim | None:
    """Claim shard ``name`` for writing; while a live writer holds it, wait for it.

    Returns the held claim, or None once the shard is published whole (by that writer, or
    before this call). A broken shard counts as not published: its claimant repairs it
    (``retire_shard``). Claims only save duplicated work (``embed.claims``): a writer that
    runs without one still publishes correctly.
    """
    claim = Claim(folder / f"{name}{CLAIM_SUFFIX}", what=f"writing shard {name}")
    waited = False
    while True:
        if shard_state(folder, name, store) == "whole":
            return None
        if claim.try_acquire():
            if shard_state(folder, name, store) == "whole":  # published meanwhile
                claim.release()
                return None
            return claim
        if not waited:
            log.info("shard %s is being written by %s: waiting for it to publish",
                     name, holder(read_claim(claim.path)))
            waited = True
        time.sleep(poll_s)


def retire_shard(folder: Path, name: str, store=None) -> bool:
    """Remove a broken shard (its file first, so readers stop seeing it at once; then its
    manifest and part files), for its claimant to publish it again; only the shard's
    claimant calls this. False when the shard is whole or not published."""
    path = folder / f"{name}.h5"
    if not path.exists():
        return False  # not published: nothing to retire (a stale manifest goes at publication)
    try:
        shard_contents(folder, name, store)
        return False
    except BrokenShard as err:
        reason = str(err)
    aside = folder / f"{name}.{uuid.uuid4().hex}.retired"
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, aside)
    manifest = manifest_path(folder, name)
    with contextlib.suppress(FileNotFoundError):
        os.replace(manifest, aside.with_suffix(".stale"))
    for leftover in (aside, aside.with_suffix(".stale")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(folder / f"{name}{FILES_SUFFIX}", ignore_errors=True)
    log.warning("%s: %s; the shard is extracted again", path, reason)
    return True


# ---------------------------------------------------------------- publishing
def publish_shard(store, name: str, files: list[Path], extra: dict) -> bool:
    """Publish shard ``name`` of ``store`` from complete, key-sorted row files (a writer's
    parts, in order): one file is linked as the shard, several are linked as its part files
    under a shard file over them (no row is copied). Then the manifest. False when another
    writer published the shard first (this copy is dropped)."""
    folder = shard_folder(store.path)
    tables = [_table(path) for path in files]
    keys = [k for table_keys, _ in tables for k in table_keys]
    lengths = np.concatenate([table_lengths for _, table_lengths in tables])
    own, records = None, []
    if len(files) == 1:
        target = files[0]
    else:
        own = folder / f"{name}{FILES_SUFFIX}" / uuid.uuid4().hex[:12]
        own.mkdir(parents=True)
        for number, (path, (table_keys, table_lengths)) in enumerate(zip(files, tables)):
            linked = own / f"{number:04d}.h5"
            _link(path, linked)
            rows = int(table_lengths.sum()) if store.level == "residue" else len(table_keys)
            records.append(FileRecord(str(linked.relative_to(folder)), linked.stat().st_size,
                                      file_sha256(linked), len(table_keys), rows))
        target = folder / f"{name}.{own.name}.h5.tmp"
        _write_files_shard(target, store, records, keys, lengths)
    manifest = make_manifest(target, name, keys, list(lengths), store.level, extra, records)
    drop_orphan_manifest(folder, name)
    inode = target.stat().st_ino
    won = publish(target, folder / f"{name}.h5")
    if won:
        write_manifest(folder, manifest, inode)
        _remove_stale_copies(folder / f"{name}{FILES_SUFFIX}", own)
    elif own is not None:
        shutil.rmtree(own, ignore_errors=True)
    return won


def _table(path: Path) -> tuple[list[str], np.ndarray]:
    with open_store_file(path) as handle:
        return ([k.decode("ascii") for k in handle["keys"][...]],
                handle["lengths"][...].astype(np.int64))


def _link(path: Path, linked: Path) -> None:
    """A second name for a part file (no copy); a rename where hard links are refused."""
    try:
        os.link(path, linked)
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        os.rename(path, linked)


def _write_files_shard(path: Path, store, records: list[FileRecord], keys: list[str],
                       lengths: np.ndarray) -> None:
    """The shard file over part files: keys, lengths (offsets) and virtual layers.

    keys: N, lengths: N (part after part); each layer N x D (protein) or sum L x D
    (residue), mapped onto the parts by paths relative to the shard folder.
    """
    total = sum(record.n_rows for record in records)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("keys", data=np.asarray(keys, dtype="S64"), fletcher32=True)
        handle.create_dataset("lengths", data=lengths.astype(np.int64), fletcher32=True)
        if store.level == "residue":
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            handle.create_dataset("offsets", data=offsets, fletcher32=True)
        for layer in range(store.n_layers):
            layout = h5py.VirtualLayout(shape=(total, store.dim), dtype=store.dtype)
            position = 0
            for record in records:
                layout[position: position + record.n_rows] = h5py.VirtualSource(
                    record.file, layer_name(layer), shape=(record.n_rows, store.dim))
                position += record.n_rows
            handle.create_virtual_dataset(layer_name(layer), layout, fillvalue=np.nan)
        handle.attrs.update({**store.attributes(), "layout": FILES_LAYOUT, "files": json.dumps(
            [[r.file, r.n_sequences, r.n_rows] for r in records])})
    with open(path, "rb") as raw:
        os.fsync(raw.fileno())


def _remove_stale_copies(files_folder: Path, keep: Path | None) -> None:
    """Part-file folders of a shard other than the published one, left by writers that died
    publishing (untouched for ``STALE_S``: a live writer links its parts within seconds)."""
    stale_before = time.time() - STALE_S
    for copy in (files_folder.iterdir() if files_folder.is_dir() else []):
        with contextlib.suppress(OSError):
            if copy != keep and copy.stat().st_mtime < stale_before:
                shutil.rmtree(copy)
