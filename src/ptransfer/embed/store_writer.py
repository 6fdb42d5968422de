"""Writing one shard: rows are buffered, committed as part files (by size and time), and the
parts become the published shard when the writer's block ends.

While a shard is being written its rows go to ``<store>.h5.shards/<shard>.parts/<writer>/``:
each commit is a complete, key-sorted file written under a temporary name and renamed, so a kill
loses at most the buffer (at most ``store.commit_seconds`` of work, or 64 MiB of rows). Parts
are not rows of the store: readers never see them, and nothing partial is ever published.
The next writer of the same shard (a re-run) adopts the parts it finds and embeds only the
rest. At the end the parts become the published shard without a copy: one part is linked as
the shard file, several are linked as the shard's part files under a small shard file whose
layers are virtual datasets over them (``embed.publication.publish_shard``); only parts of
at most ``diskspace.MERGE_BYTES`` (64 MiB) in all are merged into one file first (a bounded
copy that keeps small shards in one file). Then the parts' own names are deleted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Protocol

import numpy as np

from ptransfer.embed import diskspace
from ptransfer.embed.claims import STALE_S
from ptransfer.embed.shards import PARTS_SUFFIX, shard_folder
from ptransfer.embed.store_files import (
    MergeSource,
    StoreError,
    layer_name,
    merge_sources,
    open_store_file,
    sequence_key,
    write_rows_file,
)
from ptransfer.embed.store_files import short as _short

log = logging.getLogger(__name__)


class WritableStore(Protocol):
    """What a writer needs of its store (``EmbeddingStore``); a protocol, not an import,
    keeps the dependency one way: store -> store_writer."""

    path: Path
    level: str
    dtype: str
    dim: int
    n_layers: int
    compression: str | None

    def has_key(self, key: str) -> bool: ...

    def attributes(self) -> dict: ...

    def check_file(self, handle, path: Path) -> None: ...


class PartsVanished(RuntimeError):
    """An adopted part was deleted while merging: another writer published the shard."""


class PartsFolder:
    """The committed parts of one shard being written.

    Each writer commits into a private subfolder ``<shard>.parts/<token>/`` and adopts, when
    it starts, the parts it finds in the others (a killed writer's work). Only its own files
    and the parts it merged are ever deleted by it, so writers of one shard never remove
    each other's work in progress (they may run at once when a claim was broken).
    """

    def __init__(self, store: WritableStore, shard: str) -> None:
        self.store = store
        self.shard = shard
        self.folder = shard_folder(store.path) / f"{shard}{PARTS_SUFFIX}"
        self.own = self.folder / uuid.uuid4().hex[:12]
        self.adopted: list[Path] = []
        self.keys: set[str] = set()
        for path in sorted(_listed(self.folder, "*/*.h5")):
            try:  # a killed (or concurrent) writer's committed work
                with open_store_file(path) as handle:
                    store.check_file(handle, path)
                    keys = [k.decode("ascii") for k in handle["keys"][...]]
            except FileNotFoundError:
                continue  # merged and deleted by its writer meanwhile
            except StoreError:
                if path.exists():
                    raise
                continue
            self.adopted.append(path)
            self.keys.update(keys)
        if self.keys:
            log.info("%s: resuming shard %s from %d committed rows", store.path, shard,
                     len(self.keys))

    def files(self) -> list[Path]:
        """This writer's own committed parts."""
        if not self.own.is_dir():
            return []
        return sorted(p for p in self.own.glob("*.h5") if p.is_file())

    def write(self, keys: list[str], lengths: list[int], rows: list[np.ndarray]) -> Path:
        """One complete, key-sorted part file (temporary name, then renamed)."""
        self.own.mkdir(parents=True, exist_ok=True)
        final = self.own / f"{time.time_ns():020d}.h5"
        tmp = final.with_name(final.name + ".tmp")
        order = np.argsort(np.asarray(keys))
        dim = self.store.dim

        def layer_block(layer: int):
            yield np.concatenate([rows[i][layer].reshape(-1, dim) for i in order])

        write_rows_file(tmp, np.asarray(keys, dtype="S64")[order],
                        np.asarray(lengths, dtype=np.int64)[order], layer_block, self.store)
        os.replace(tmp, final)
        self.keys.update(keys)
        return final

    def publishable(self) -> tuple[list[Path], list[Path]]:
        """(the files to publish as the shard, the parts they hold): every part as it is
        (linked, not copied: ``embed.publication``), or several small parts (together at
        most ``diskspace.MERGE_BYTES``) merged into one file. Raises PartsVanished when an adopted
        part is gone."""
        parts = self.adopted + self.files()
        if not parts:
            return [], []
        try:
            handles = [open_store_file(p) for p in parts]
        except StoreError as err:
            if any(not p.exists() for p in parts):
                raise PartsVanished(str(err)) from err
            raise
        try:
            for handle, path in zip(handles, parts):
                self.store.check_file(handle, path)
            total = sum(p.stat().st_size for p in parts)
            if len(parts) == 1 or total > diskspace.MERGE_BYTES:
                return list(parts), parts
            self.own.mkdir(parents=True, exist_ok=True)
            target = self.own / f"merged-{uuid.uuid4().hex[:8]}.h5.tmp"
            merge_sources(target, [MergeSource(h, self.store.level, self.store.n_layers)
                                   for h in handles], self.store)
            return [target], parts
        finally:
            for handle in handles:
                handle.close()

    def remove(self, merged: list[Path]) -> None:
        """Delete the merged parts and this writer's folder; then what dead writers left
        (files untouched for ``STALE_S``: a live writer commits far more often) and empty
        folders. The shard is published by now, so no part of it is needed any more."""
        for path in merged:
            path.unlink(missing_ok=True)
        shutil.rmtree(self.own, ignore_errors=True)
        stale_before = time.time() - STALE_S
        for path in _listed(self.folder, "*/*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < stale_before:
                    path.unlink()
        for folder in [*_listed(self.folder, "*/"), self.folder]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a concurrent writer may still add parts

    def remove_temporaries(self) -> None:
        if self.own.is_dir():
            for tmp in self.own.glob("*.tmp"):
                tmp.unlink(missing_ok=True)


def _listed(folder: Path, pattern: str) -> list[Path]:
    """``folder.glob(pattern)``, or nothing when a concurrent writer removes a folder while
    it is listed (clean-up is best effort: the next writer of the shard does it)."""
    try:
        return list(folder.glob(pattern))
    except OSError:
        return []


class StoreWriter:
    """Buffers rows and commits them as parts; made by ``EmbeddingStore.writer()``."""

    def __init__(self, store: WritableStore, parts: PartsFolder, flush_bytes: int,
                 commit_seconds: float) -> None:
        self.store = store
        self.parts = parts
        self.flush_bytes = int(flush_bytes)
        self.commit_seconds = float(commit_seconds)
        self._last_commit = time.monotonic()
        self.n_added = 0
        self.published = False  # set when the writer's block ends: its copy is the shard
        self._keys: list[str] = []
        self._lengths: list[int] = []
        self._rows: list[np.ndarray] = []
        self._pending: set[str] = set()
        self._bytes = 0

    def has(self, sequence: str) -> bool:
        """Whether the store, this shard's committed parts or the buffer hold the sequence."""
        key = sequence_key(sequence)
        return self.store.has_key(key) or key in self.parts.keys or key in self._pending

    def add(self, sequence: str, features, commit: bool = True) -> bool:
        """Buffer one row; returns False (and stores nothing) when the sequence is present.

        ``features``: torch tensor or array, protein level n_layers x D, residue level
        n_layers x len(sequence) x D; converted to the store dtype, must stay finite.
        ``commit=False``: never commit here (the caller calls ``commit_if_due`` where a
        batch ends).
        """
        if self.has(sequence):
            return False
        row = self._validated(sequence, features)
        key = sequence_key(sequence)
        self._keys.append(key)
        self._lengths.append(len(sequence))
        self._rows.append(row)
        self._pending.add(key)
        self._bytes += row.nbytes
        self.n_added += 1
        if commit:
            self.commit_if_due()
        return True

    def commit_if_due(self) -> None:
        """Commit by size (bounds RAM) or by time (bounds the work a kill loses)."""
        if (self._bytes >= self.flush_bytes
                or time.monotonic() - self._last_commit >= self.commit_seconds):
            self.commit()

    def _validated(self, sequence: str, features) -> np.ndarray:
        store = self.store
        if hasattr(features, "detach"):
            features = features.detach().cpu().numpy()
        row = np.asarray(features)
        if store.level == "protein":
            expected = (store.n_layers, store.dim)
        else:
            expected = (store.n_layers, len(sequence), store.dim)
        if row.shape != expected:
            raise ValueError(f"features of sequence {_short(sequence)!r} have shape {row.shape}, "
                             f"the {store.level}-level store {store.path} expects {expected}")
        with np.errstate(over="ignore"):  # overflow is reported below, naming the sequence
            row = row.astype(store.dtype)
        if not np.isfinite(row).all():
            raise ValueError(f"features of sequence {_short(sequence)!r} are not finite in "
                             f"{store.dtype} (NaN, or too large for the dtype); store {store.path}")
        return row

    def commit(self) -> None:
        """Write the buffered rows as one complete part (no-op when empty)."""
        self._last_commit = time.monotonic()
        if not self._rows:
            return
        part = self.parts.write(self._keys, self._lengths, self._rows)
        log.debug("committed %d rows to %s", len(self._rows), part)
        self._keys, self._lengths, self._rows, self._bytes = [], [], [], 0
        self._pending = set()


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG)


def publish_parts(store, name: str, parts: PartsFolder, extra: dict) -> bool:
    """Publish a shard's parts (``PartsFolder.publishable``) with its manifest; False when
    there was nothing to publish or another writer published the shard first."""
    from ptransfer.embed.publication import publish_shard

    final = store.shard_dir / f"{name}.h5"
    try:
        files, used = parts.publishable()
        won = bool(files) and publish_shard(store, name, files, extra)
    except (PartsVanished, FileNotFoundError):
        if not final.exists():
            raise
        files, used, won = [], [], False  # another writer published the shard with those parts
    if files and not won:
        log.info("%s: shard %s was published by another writer; this copy is dropped",
                 store.path, name)
    parts.remove(used)
    return won


def close_after_error(writer: StoreWriter, err: BaseException) -> None:
    """Keep what can be kept after a writer's block raised; never mask ``err``.

    After a disk error nothing more is written (no retry on a full disk): committed
    parts stay for the next writer of the shard, temporaries are deleted. Otherwise
    (interrupt, encoder error) the buffer is committed as a part, so work done survives;
    a failure doing so is logged, not raised. Nothing is published either way.
    """
    path = writer.store.path
    if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
        log.error("%s: write failed (%s); %d buffered rows dropped, committed parts kept",
                  path, err, len(writer._rows))
        writer.parts.remove_temporaries()
        return
    try:
        writer.commit()
    except Exception as second:  # noqa: BLE001 - the first error is the one to report
        log.error("%s: could not save buffered rows after %r: %s", path, err, second)
        writer.parts.remove_temporaries()


__all__ = ["PartsFolder", "PartsVanished", "StoreWriter", "close_after_error", "layer_name",
           "publish_parts"]
