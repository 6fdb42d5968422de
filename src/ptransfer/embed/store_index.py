"""Reading a sharded store as one: the row index over its files, and the index file.

The rows of a store live in its published shards (``embed.shards``) and, for stores written
by ptransfer < 0.2, in one legacy main file at the store's own path. ``load_view`` lists the
shard folder and builds the row index ``key -> (source, row)`` from the shards' manifests
(a shard without one is read and gets its manifest written). A key held by two sources is
read from the first (legacy file first, then shards by name), so the view never depends on
which writer won a race.

**Finalize** (``finalize``) makes the store readable as one file again: it writes, at the
store's path, an *index file*: plain HDF5 with the ``keys``, ``lengths`` (and residue-level
``offsets``) of every row, the ``source`` / ``source_row`` each row comes from, and every
``layer_NNN`` as an HDF5 **virtual dataset** mapping onto the shards' own datasets (relative
paths, so the folder can move). h5py alone reads it as before; Fletcher-32 checksums of the
shards are checked through it; a missing shard reads as NaN (never silently as numbers).
The index file lists the shards it maps (name and size); a reader whose listing agrees takes
the row index from it in one read, otherwise it rebuilds from the manifests and, when it can
write, finalizes again. Finalizing is metadata only (no feature is copied), written to a
temporary name and renamed, so concurrent finalizers write equal files and readers never see
a half-written one. A legacy main file is moved into the shard folder first (a rename).
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

from ptransfer.embed.shards import (
    MANIFEST_SUFFIX,
    make_manifest,
    manifest_path,
    publish,
    read_manifest,
    shard_folder,
    write_manifest,
)
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
    """One file holding rows: a shard, or a legacy main file."""

    name: str
    path: Path
    keys: list[str]
    lengths: np.ndarray  # N int64
    offsets: np.ndarray  # N + 1 int64 (protein level: 0..N)
    checked: bool = False  # attributes checked against the store on first open


@dataclass
class StoreView:
    """The rows a store has right now, across its files."""

    sources: list[Source] = field(default_factory=list)
    index: dict[str, tuple[int, int]] = field(default_factory=dict)
    signature: list[list] = field(default_factory=list)  # [[shard name, bytes], ...]

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
        with open_store_file(path) as handle:
            store.check_file(handle, path)
            if not is_index_file(handle):
                view.add(_source_from_file(LEGACY, path, handle, store.level, store.n_layers))
            elif _listed(handle) == listing:
                _view_from_index(view, handle, listing, path, store.level)
                return view
    folder = shard_folder(path)
    for name, _ in listing:
        view.add(_shard_source(folder, name, store, writable))
    return view


def _listed(handle: h5py.File) -> list[list]:
    return json.loads(handle.attrs.get("sources", "[]"))


def _view_from_index(view: StoreView, handle, listing, path: Path, level: str) -> None:
    keys = handle["keys"][...].astype(str)
    lengths = handle["lengths"][...].astype(np.int64)
    source = handle["source"][...]
    folder = shard_folder(path)
    for number, (name, _) in enumerate(listing):
        mine = np.flatnonzero(source == number)
        view.add(Source(name, folder / f"{name}.h5", list(keys[mine]), lengths[mine],
                        _offsets(level, lengths[mine])))


def _source_from_file(name: str, path: Path, handle, level: str, n_layers: int) -> Source:
    table = MergeSource(handle, level, n_layers)
    return Source(name, path, list(table.keys.astype(str)), table.lengths, table.offsets,
                  checked=True)


def _shard_source(folder: Path, name: str, store, writable: bool) -> Source:
    """A shard from its manifest (size checked); from the file itself when it has none."""
    path = folder / f"{name}.h5"
    manifest_file = manifest_path(folder, name)
    if manifest_file.exists():
        manifest = read_manifest(manifest_file)
        size = path.stat().st_size
        if size != manifest.n_bytes:
            raise StoreError(f"{path}: {size} bytes but its manifest {manifest_file} records "
                             f"{manifest.n_bytes}: the shard is damaged; delete {path} and "
                             f"{manifest_file.name} and re-run to rebuild it")
        lengths = np.asarray(manifest.lengths, dtype=np.int64)
        return Source(name, path, manifest.keys, lengths, _offsets(store.level, lengths))
    with open_store_file(path) as handle:
        store.check_file(handle, path)
        source = _source_from_file(name, path, handle, store.level, store.n_layers)
    if writable:  # published without its manifest (writer killed in between): add it
        try:
            write_manifest(folder, make_manifest(path, source.keys, list(source.lengths),
                                                 store.level, {"adopted": True}))
        except OSError as err:
            log.debug("could not write the manifest of %s: %s", path, err)
    return source


# ---------------------------------------------------------------- finalize
def adopt_legacy_file(store) -> None:
    """Move a legacy main file into the shard folder (it becomes a shard like any other)."""
    path = Path(store.path)
    if not path.exists():
        return
    with open_store_file(path) as handle:
        if is_index_file(handle):
            return
        generation = str(handle.attrs.get("generation", uuid.uuid4().hex))[:16]
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
    if path.exists():
        with open_store_file(path) as handle:
            if is_index_file(handle) and _listed(handle) == view.signature:
                return False
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        _write_index(tmp, store, view)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("%s: index over %d shard(s), %d rows", path, len(view.sources), len(view.index))
    return True


def _has_legacy(view: StoreView) -> bool:
    return any(s.name == LEGACY for s in view.sources)


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
                             "layout": "index", "sources": json.dumps(view.signature)})


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


def publish_shard(store, tmp: Path, name: str, keys: list[str], lengths: list[int],
                  extra: dict) -> bool:
    """Publish a complete shard file and then its manifest; False when already published."""
    folder = shard_folder(store.path)
    final = folder / f"{name}.h5"
    won = publish(tmp, final)
    if won:
        write_manifest(folder, make_manifest(final, keys, lengths, store.level, extra))
    return won


__all__ = ["LEGACY", "MANIFEST_SUFFIX", "Source", "StoreView", "adopt_legacy_file",
           "check_source", "finalize", "load_view", "publish_shard", "shard_listing"]
