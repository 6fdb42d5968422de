"""Reading a sharded store as one: the row index over its files, and the index file.

The rows of a store live in its published shards (``embed.shards``; one file each, or part
files under a shard file: ``embed.publication``) and, for stores written by ptransfer < 0.2,
in one legacy main file at the store's own path. ``load_view`` lists the shard folder and
builds the row index ``key -> (source, row)`` over every file holding rows, from the shards'
manifests (a shard without one is read and gets its manifest written). A key held by two
sources is read from the first (legacy file first, then shards by name), so the view never
depends on which writer won a race. A **broken** shard (a file missing, or of another size
than its manifest records) is left out: its rows read as missing, so the next extraction
writes them again (``embed.publication.retire_shard``); ``broken`` says which and why.

**Finalize** (``finalize``) makes the store readable as one file again: it writes, at the
store's path, an *index file*: plain HDF5 with the ``keys``, ``lengths`` (and residue-level
``offsets``) of every row, the ``source`` / ``source_row`` each row comes from, and every
``layer_NNN`` as an HDF5 **virtual dataset** mapping onto the files holding the rows
(relative paths, so the folder can move). h5py alone reads it as before; Fletcher-32
checksums of the shards are checked through it; a missing shard reads as NaN (never silently
as numbers). The index file lists the shards it maps (name and size) and the files (path and
size); a reader whose listing agrees, and whose files are all there, takes the row index from
it in one read, otherwise it rebuilds from the manifests. Finalizing is metadata only (no
feature is copied), written to a temporary name and renamed, so concurrent finalizers write
equal files and readers never see a half-written one. The index file is derived data: one
that cannot be read is rebuilt from the shards (rewritten at once by a reader that can
write), never a reason to fail. A legacy main file is moved into the shard folder first.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ptransfer.embed.publication import FILES_SUFFIX, BrokenShard, shard_contents
from ptransfer.embed.shards import MANIFEST_SUFFIX, shard_folder
from ptransfer.embed.store_files import (
    MergeSource,
    StoreError,
    check_store_file,
    layer_name,
    open_store_file,
)

log = logging.getLogger(__name__)

INDEX_FORMAT = 3  # the store's own path holds an index file over shards
LEGACY = "(main file)"


@dataclass
class Source:
    """One file holding rows: a shard (or one of its part files), or a legacy main file."""

    name: str  # the shard it belongs to (LEGACY for a legacy main file)
    path: Path
    keys: list[str]
    lengths: np.ndarray  # N int64
    offsets: np.ndarray  # N + 1 int64 (protein level: 0..N)
    checked: bool = False  # attributes checked against the store on first open
    n_bytes: int = -1  # size recorded for it (manifest, index file); -1: not recorded


@dataclass
class StoreView:
    """The rows a store has right now, across its files."""

    sources: list[Source] = field(default_factory=list)
    index: dict[str, tuple[int, int]] = field(default_factory=dict)
    signature: list[list] = field(default_factory=list)  # [[shard name, bytes], ...]
    broken: dict[str, str] = field(default_factory=dict)  # shard -> why it is left out
    index_damaged: str = ""  # why the index file could not be used ("": it could, or none)

    def add(self, source: Source) -> None:
        number = len(self.sources)
        self.sources.append(source)
        for row, key in enumerate(source.keys):
            self.index.setdefault(key, (number, row))


def _offsets(level: str, lengths: np.ndarray) -> np.ndarray:
    if level == "residue":
        return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return np.arange(len(lengths) + 1, dtype=np.int64)


def is_index_file(handle: h5py.File) -> bool:
    return handle.attrs.get("layout") == "index"


def shard_listing(store_path: Path) -> list[list]:
    """``[[name, bytes], ...]`` of the published shard files, sorted by name."""
    folder = shard_folder(store_path)
    if not folder.is_dir():
        return []
    listing = []
    for path in sorted(folder.glob("*.h5")):
        try:
            listing.append([path.stem, path.stat().st_size])
        except FileNotFoundError:  # retired while listing
            continue
    return listing


def load_view(store, writable: bool = True) -> StoreView:
    """The row index of ``store`` (an ``EmbeddingStore``) from its files, as described above."""
    path = Path(store.path)
    listing = shard_listing(path)
    view = StoreView(signature=listing)
    if path.exists():
        try:
            handle = open_store_file(path)
        except StoreError as err:
            if not listing:
                raise  # no shards: the file may be a legacy store's only copy of its rows
            view.index_damaged = str(err)
            handle = None
        if handle is not None:
            with handle:
                store.check_file(handle, path)
                if not is_index_file(handle):
                    view.add(_source_from_file(LEGACY, path, handle, store.level,
                                               store.n_layers))
                elif _listed(handle) == listing and _view_from_index(view, handle, path,
                                                                     store.level):
                    return view
    folder = shard_folder(path)
    for name, _ in listing:
        try:
            files = shard_contents(folder, name, store, writable)
        except BrokenShard as err:
            _left_out(path, name, str(err))
            view.broken[name] = str(err)
            continue
        for file in files:
            view.add(Source(name, file.path, file.keys, file.lengths,
                            _offsets(store.level, file.lengths), n_bytes=file.n_bytes))
    return view


_REPORTED: set[tuple] = set()  # broken shards already logged by this process


def _left_out(path: Path, name: str, reason: str) -> None:
    if (str(path), name, reason) not in _REPORTED:
        _REPORTED.add((str(path), name, reason))
        log.warning("%s: shard %s is broken (%s): its rows read as missing; the next run "
                    "that extracts them writes the shard again", path, name, reason)


def _listed(handle: h5py.File) -> list[list]:
    return json.loads(handle.attrs.get("sources", "[]"))


def _view_from_index(view: StoreView, handle, path: Path, level: str) -> bool:
    """Fill ``view`` from an up-to-date index file; False (``view`` untouched) when it cannot
    be read, or a file it maps is missing or changed size (the caller rebuilds)."""
    folder = shard_folder(path)
    try:
        keys = handle["keys"][...].astype(str)
        lengths = handle["lengths"][...].astype(np.int64)
        source = handle["source"][...]
        files = json.loads(handle.attrs.get("files", "null") or "null")
    except (OSError, KeyError, ValueError) as err:
        view.index_damaged = f"{path}: index file unreadable ({err})"
        return False
    if files is None:  # written before shards had part files: one file per listed shard
        files = [[f"{name}.h5", n_bytes] for name, n_bytes in view.signature]
    sources = []
    for number, (relative, n_bytes) in enumerate(files):
        file = folder / relative
        try:
            if file.stat().st_size != n_bytes:
                return False
        except FileNotFoundError:
            return False
        mine = np.flatnonzero(source == number)
        sources.append(Source(shard_of(relative), file, list(keys[mine]), lengths[mine],
                              _offsets(level, lengths[mine]), n_bytes=n_bytes))
    for one in sources:
        view.add(one)
    return True


def shard_of(relative: str) -> str:
    """The shard a file belongs to, from its path in the shard folder (``S.h5`` or
    ``S.files/<writer>/0000.h5``)."""
    first = Path(relative).parts[0]
    for suffix in (".h5", FILES_SUFFIX):
        if first.endswith(suffix):
            return first[: -len(suffix)]
    return first


def _source_from_file(name: str, path: Path, handle, level: str, n_layers: int) -> Source:
    table = MergeSource(handle, level, n_layers)
    return Source(name, path, list(table.keys.astype(str)), table.lengths, table.offsets,
                  checked=True, n_bytes=path.stat().st_size)


# ---------------------------------------------------------------- finalize
def adopt_legacy_file(store) -> None:
    """Move a legacy main file into the shard folder (it becomes a shard like any other)."""
    path = Path(store.path)
    if not path.exists():
        return
    try:
        with open_store_file(path) as handle:
            if is_index_file(handle):
                return
            generation = str(handle.attrs.get("generation", uuid.uuid4().hex))[:16]
    except StoreError:
        if shard_listing(path):
            return  # a damaged index file (derived data): finalize replaces it
        raise
    folder = shard_folder(path)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"legacy-{generation}.h5"
    try:
        os.link(path, target)
    except FileExistsError:
        pass  # another process moved it first
    except FileNotFoundError:
        return
    path.unlink(missing_ok=True)
    log.info("%s: legacy store file moved to %s (a shard from now on)", path, target)


def finalize(store, view: StoreView | None = None) -> bool:
    """Write the index file at ``store.path`` unless it already lists the current shards.

    Returns True when a new index file was written.
    """
    path = Path(store.path)
    adopt_legacy_file(store)
    view = load_view(store) if view is None or _has_legacy(view) else view
    if path.exists() and not view.index_damaged:
        try:
            with open_store_file(path) as handle:
                if is_index_file(handle) and _listed(handle) == view.signature and \
                        _listed_files(handle) == _files(view, path):
                    return False
        except StoreError as err:
            log.warning("%s; rebuilt from the shards", err)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        _write_index(tmp, store, view)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if view.index_damaged:
        log.warning("%s: the index file could not be read (%s); rebuilt from %d shard(s)",
                    path, view.index_damaged, len(view.signature))
    log.info("%s: index over %d shard(s), %d rows", path, len(view.signature), len(view.index))
    return True


def _has_legacy(view: StoreView) -> bool:
    return any(s.name == LEGACY for s in view.sources)


def _listed_files(handle: h5py.File) -> list[list] | None:
    return json.loads(handle.attrs.get("files", "null") or "null")


def _files(view: StoreView, path: Path) -> list[list]:
    """``[[path relative to the shard folder, bytes], ...]`` of every source, in order."""
    folder = shard_folder(path)
    return [[os.path.relpath(s.path, folder), int(s.n_bytes if s.n_bytes >= 0
                                                  else s.path.stat().st_size)]
            for s in view.sources]


def _write_index(tmp: Path, store, view: StoreView) -> None:
    sources = view.sources
    keys = np.array([k for s in sources for k in s.keys], dtype="S64")
    lengths = np.concatenate([s.lengths for s in sources] + [np.zeros(0, np.int64)])
    source = np.concatenate([np.full(len(s.keys), i, np.int32) for i, s in enumerate(sources)]
                            + [np.zeros(0, np.int32)])
    source_row = np.concatenate([np.arange(len(s.keys)) for s in sources]
                                + [np.zeros(0, np.int64)]).astype(np.int64)
    with h5py.File(tmp, "w") as handle:
        handle.create_dataset("keys", data=keys)
        handle.create_dataset("lengths", data=lengths.astype(np.int64))
        if store.level == "residue":
            handle.create_dataset("offsets", data=_offsets("residue", lengths))
        handle.create_dataset("source", data=source)
        handle.create_dataset("source_row", data=source_row)
        for layer in range(store.n_layers):
            _virtual_layer(handle, layer, store, sources, Path(store.path))
        handle.attrs.update({**store.attributes(), "format_version": INDEX_FORMAT,
                             "layout": "index", "sources": json.dumps(view.signature),
                             "files": json.dumps(_files(view, Path(store.path)))})


def _virtual_layer(handle, layer: int, store, sources: list[Source], path: Path) -> None:
    name = layer_name(layer)
    total = int(sum(int(s.offsets[-1]) for s in sources))
    if total == 0:
        handle.create_dataset(name, shape=(0, store.dim), dtype=store.dtype)
        return
    layout = h5py.VirtualLayout(shape=(total, store.dim), dtype=store.dtype)
    position = 0
    for source in sources:
        rows = int(source.offsets[-1])
        relative = os.path.relpath(source.path, path.parent)
        layout[position: position + rows] = h5py.VirtualSource(relative, name,
                                                               shape=(rows, store.dim))
        position += rows
    handle.create_virtual_dataset(name, layout, fillvalue=np.nan)


def check_source(store, source: Source, handle: h5py.File) -> None:
    """Check a shard's attributes the first time it is opened for reading."""
    if not source.checked:
        check_store_file(handle, source.path, store.expected_attributes(), store.identity)
        source.checked = True


__all__ = ["LEGACY", "MANIFEST_SUFFIX", "Source", "StoreView", "adopt_legacy_file",
           "check_source", "finalize", "load_view", "shard_listing", "shard_of"]
