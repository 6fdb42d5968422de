"""On-disk format of the embedding store: writing a complete file, merging files.

A store file (main or shard) is plain HDF5 (see ``ptransfer.embed.store`` for the schema). This
module writes one complete file from rows and merges several files into one sorted file;
``ptransfer.embed.store`` decides when (shards, atomic replace, lock).

Checksums (format 2): every dataset is chunked with HDF5's Fletcher-32 filter, so a damaged
block is a read error (a StoreError naming the file and how to rebuild it), never silently
changed numbers. Format-1 files (no checksums) still read; their next rewrite (any added row
merges into a new main file) writes them in format 2. Writes go through a ``GuardedFile``
(see ``ptransfer.embed.diskspace``): a full disk is a clean OSError, the half-written file
is deleted, and HDF5 never holds a file it cannot close.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Protocol

import h5py
import numpy as np

from ptransfer import __version__
from ptransfer.embed.diskspace import GuardedFile


class StoreLayout(Protocol):
    """What a file writer needs to know of its store (``EmbeddingStore`` provides it).

    A protocol rather than an import keeps the dependency one way: store -> store_files.
    """

    level: str
    dtype: str
    dim: int
    n_layers: int
    compression: str | None

    def attributes(self) -> dict: ...

FORMAT_VERSION = 2  # 2: Fletcher-32 checksums on every dataset; 1 (none) still reads


class StoreError(RuntimeError):
    """An embedding store file that cannot be used as asked. The message names the file."""


def sequence_key(sequence: str) -> str:
    """Hex SHA-256 of the sequence (64 characters): the row key of the store."""
    return hashlib.sha256(sequence.encode("utf-8")).hexdigest()


def short(sequence: str) -> str:
    return sequence[:20] + ("..." if len(sequence) > 20 else "")


def damaged_message(path: Path, err: BaseException) -> str:
    return (f"{path}: the store file is damaged ({err}); delete {path} and re-run to rebuild "
            "it (`ptransfer store verify` checks every store)")


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn HDF5 read errors (a failed Fletcher-32 checksum among them) into a StoreError."""
    try:
        yield
    except OSError as err:
        raise StoreError(damaged_message(path, err)) from err


def layer_name(layer: int) -> str:
    return f"layer_{layer:03d}"


def package_versions() -> dict[str, str]:
    """Versions recorded in every store file's attributes."""
    versions = {"ptransfer_version": __version__}
    for dist in ("torch", "fair-esm", "sequence-models", "h5py"):
        try:
            versions[f"{dist.replace('-', '_')}_version"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[f"{dist.replace('-', '_')}_version"] = "absent"
    return versions


def open_store_file(path: Path) -> h5py.File:
    """Open read-only; a file HDF5 cannot read is a StoreError naming it."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise StoreError(f"{path}: cannot be read as HDF5 ({err}); delete it to rebuild") from err


def check_store_file(handle: h5py.File, path: Path, expected: dict, identity: dict) -> None:
    """Raise StoreError unless the file is complete and has ``expected`` attributes."""
    attrs = handle.attrs
    if not bool(attrs.get("complete", False)):
        raise StoreError(f"{path}: not marked complete (not a ptransfer store, or written "
                         "by a foreign tool); delete it to rebuild")
    for name, value in expected.items():
        if attrs.get(name) != value:
            raise StoreError(f"{path}: store has {name}={attrs.get(name)!r} but {value!r} was "
                             "requested; use another path or delete the file")
    stored_identity = json.loads(attrs.get("identity", "null"))
    if stored_identity != identity:
        raise StoreError(f"{path}: store identity {stored_identity} differs from the "
                         f"requested {identity}; use store_path() for this identity")


def read_protein_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (any order, repeats allowed) of an N x D dataset, as an array."""
    if len(rows) == 0:
        return np.empty((0, dataset.shape[1]), dtype=dataset.dtype)
    unique, inverse = np.unique(rows, return_inverse=True)
    # One bulk read beats h5py point selection unless very few rows are wanted.
    if len(unique) * 8 >= dataset.shape[0]:
        return dataset[...][rows]
    return dataset[unique][inverse]  # len(rows) x D


def read_residue_rows(dataset: h5py.Dataset, offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows of a sum L x D dataset (row r: ``offsets[r]:offsets[r+1]``), concatenated in order.

    Requested rows adjacent in the file are read as one slice: a task that wants the whole
    store reads each layer in a few large reads, not one per sequence.
    """
    lengths = offsets[rows + 1] - offsets[rows]
    out_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out = np.empty((int(lengths.sum()), dataset.shape[1]), dtype=dataset.dtype)  # sum L x D
    unique = np.unique(rows)
    block_of: dict[int, tuple[np.ndarray, int]] = {}
    for run in np.split(unique, np.flatnonzero(np.diff(unique) != 1) + 1):
        if len(run) == 0:
            continue
        base = int(offsets[run[0]])
        block = dataset[base: int(offsets[run[-1] + 1])]
        block_of.update((int(row), (block, base)) for row in run)
    for i, row in enumerate(rows):
        block, base = block_of[int(row)]
        start = int(offsets[row]) - base
        out[out_starts[i]: out_starts[i] + lengths[i]] = block[start: start + lengths[i]]
    return out


def _layer_datasets_ok(handle: h5py.File, path: Path, n_rows: int, n_layers: int) -> None:
    for layer in range(n_layers):
        name = layer_name(layer)
        if name not in handle or handle[name].shape[0] != n_rows:
            raise StoreError(f"{path}: dataset {name} is missing or does not have {n_rows} rows; "
                             "delete the file to rebuild")


class MergeSource:
    """Row table of one store file (main or shard): keys, lengths, offsets, open handle."""

    def __init__(self, handle: h5py.File, level: str, n_layers: int) -> None:
        path = Path(handle.filename)
        self.path = path
        try:
            self.keys = handle["keys"][...]  # N |S64
            self.lengths = handle["lengths"][...].astype(np.int64)  # N
            if level == "residue":
                self.offsets = handle["offsets"][...].astype(np.int64)  # N + 1
            else:
                self.offsets = np.arange(len(self.keys) + 1, dtype=np.int64)
        except KeyError as err:
            raise StoreError(f"{path}: missing dataset ({err}); delete the file to "
                             "rebuild") from err
        except OSError as err:
            raise StoreError(damaged_message(path, err)) from err
        if not len(self.keys) == len(self.lengths) == len(self.offsets) - 1:
            raise StoreError(f"{path}: keys, lengths and offsets disagree in size; delete it")
        _layer_datasets_ok(handle, path, int(self.offsets[-1]), n_layers)
        self.handle = handle

    def layer_reader(self, layer: int, max_bytes: int = 256 << 20):
        """The layer in memory when small (fast gathers), else the h5py dataset itself."""
        dataset = self.handle[layer_name(layer)]
        if dataset.size * dataset.dtype.itemsize > max_bytes:
            return dataset
        with reading(self.path):
            return dataset[...]


def write_rows_file(
    path: Path,
    keys: np.ndarray,
    lengths: np.ndarray,
    layer_blocks: Callable[[int], Iterator[np.ndarray]],
    store: StoreLayout,
) -> None:
    """Write a complete store file at ``path``; ``layer_blocks(l)`` yields rows in order.

    keys: N |S64, lengths: N; blocks of layer l concatenate to N x D (protein) or
    sum L x D (residue). Blocks are gathered to ~16 MiB before each HDF5 write.
    """
    n_rows = len(keys) if store.level == "protein" else int(lengths.sum())
    guard = GuardedFile(path)
    try:
        with h5py.File(guard, "w") as handle:
            _write_datasets(handle, guard, keys, lengths, layer_blocks, store, n_rows)
            handle.attrs.update(store.attributes())
        guard.sync()
    except BaseException:
        guard.close()
        path.unlink(missing_ok=True)
        raise
    guard.close()
    if guard.error is not None:
        path.unlink(missing_ok=True)
        raise OSError(guard.error.errno, f"writing the embedding store file {path} failed: "
                      f"{guard.error.strerror or guard.error} (the partial file was deleted; "
                      f"{path.parent} needs more free space)") from guard.error


def _write_datasets(handle, guard: GuardedFile, keys, lengths, layer_blocks, store, n_rows):
    """The datasets of one file; stops at the first failed OS write (``guard.error``)."""
    itemsize = np.dtype(store.dtype).itemsize
    chunk_rows = max(1, min(max(n_rows, 1), (1 << 20) // (store.dim * itemsize)))  # ~1 MiB
    block_rows = 16 * chunk_rows
    # Checksums on the small datasets too: a damaged key would silently mislabel a row.
    handle.create_dataset("keys", data=keys.astype("S64"), maxshape=(None,), fletcher32=True)
    handle.create_dataset("lengths", data=lengths.astype(np.int64), maxshape=(None,),
                          fletcher32=True)
    if store.level == "residue":
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        handle.create_dataset("offsets", data=offsets, maxshape=(None,), fletcher32=True)
    for layer in range(store.n_layers):
        dataset = handle.create_dataset(
            layer_name(layer), shape=(n_rows, store.dim), dtype=store.dtype,
            chunks=(chunk_rows, store.dim), maxshape=(None, store.dim),
            compression=store.compression, fletcher32=True)
        position, pending = 0, []
        for block in layer_blocks(layer):
            pending.append(block)
            if sum(len(b) for b in pending) >= block_rows:
                data = np.concatenate(pending)
                dataset[position: position + len(data)] = data
                position, pending = position + len(data), []
                if guard.error is not None:
                    return  # the disk is full: stop writing, the caller deletes the file
        if pending:
            data = np.concatenate(pending)
            dataset[position: position + len(data)] = data
            position += len(data)
        if guard.error is not None:
            return
        if position != n_rows:
            raise StoreError(f"{guard.path}: wrote {position} rows of {layer_name(layer)}, "
                             f"expected {n_rows}")


def merge_sources(path: Path, sources: list[MergeSource], store: StoreLayout) -> int:
    """Write the union of ``sources`` to ``path``, sorted by key; returns the row count.

    A key present in several sources keeps its first source's row (main file first), so a
    merge repeated after a crash between replace and shard deletion changes nothing.
    """
    all_keys = np.concatenate([s.keys for s in sources]) if sources else np.zeros(0, "S64")
    source_of = np.concatenate([np.full(len(s.keys), i) for i, s in enumerate(sources)]
                               + [np.zeros(0, dtype=np.int64)]).astype(np.int64)
    row_of = np.concatenate([np.arange(len(s.keys)) for s in sources]
                            + [np.zeros(0, dtype=np.int64)]).astype(np.int64)
    keys, first = np.unique(all_keys, return_index=True)  # sorted, first occurrence
    source_of, row_of = source_of[first], row_of[first]
    lengths = np.array([sources[s].lengths[r] for s, r in zip(source_of, row_of)], np.int64)
    # Runs of consecutive rows of one source become one slice read.
    breaks = np.flatnonzero((np.diff(source_of) != 0) | (np.diff(row_of) != 1)) + 1
    run_starts = np.concatenate([[0], breaks]).astype(np.int64)
    run_ends = np.concatenate([breaks, [len(keys)]]).astype(np.int64)

    def layer_blocks(layer: int) -> Iterator[np.ndarray]:
        readers: dict[int, object] = {}
        for start, end in zip(run_starts, run_ends):
            if start == end:
                continue
            source = int(source_of[start])
            if source not in readers:
                readers[source] = sources[source].layer_reader(layer)
            offsets = sources[source].offsets
            first_row, last_row = row_of[start], row_of[end - 1]
            with reading(sources[source].path):
                block = readers[source][offsets[first_row]: offsets[last_row + 1]]
            yield block

    write_rows_file(path, keys, lengths, layer_blocks, store)
    return len(keys)
