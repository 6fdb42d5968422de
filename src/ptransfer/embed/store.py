"""The HDF5 embedding store: one file per encoder identity, rows keyed by sequence hash.

A row holds the per-layer features of one sequence. Rows are keyed by ``sequence_key``
(SHA-256 of the sequence), so tasks that share sequences (GB1's splits share all 8,733)
embed them once. The file is plain HDF5; h5py alone can read it:

    keys        N            |S64   hex SHA-256 of each sequence, rows SORTED by key
    lengths     N            int64  residues of each sequence
    offsets     N + 1        int64  residue level only: row i is rows offsets[i]:offsets[i+1]
                                    of every layer dataset
    layer_000 ... layer_{n_layers-1}
                N x D        protein level (pooled features; float32 by default)
                sum L x D    residue level (per-residue features; float16 by default)
    root attributes: identity (JSON), level, dtype, n_layers, dim, format_version,
                     ptransfer / torch / fair-esm / sequence-models versions,
                     generation (changes at every rewrite), complete=True

Crash safety: the main file is only ever replaced atomically (``os.replace``). New rows are
written to shard files ``<name>.h5.shards/NNNNN.h5`` (each written under a temp name, closed,
then renamed); leaving ``writer()`` merges main + shards into a temp file with rows sorted
by key and replaces the main file. A killed run leaves the last complete main file plus
complete shards; the next open merges them (repair) and deletes stray temp files, so every
row ever read is whole, and sequences not yet embedded are reported by ``missing``.
Writers of one store are serialised by a ``filelock.FileLock`` on ``<path>.lock``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
from filelock import FileLock, Timeout

from ptransfer.embed.store_files import (
    FORMAT_VERSION,
    MergeSource,
    StoreError,
    check_store_file,
    layer_name,
    merge_sources,
    open_store_file,
    package_versions,
    read_protein_rows,
    read_residue_rows,
    reading,
    sequence_key,
    write_rows_file,
)
from ptransfer.embed.store_files import short as _short
from ptransfer.embed.store_writer import StoreWriter

__all__ = ["EmbeddingStore", "StoreError", "StoreWriter", "layer_name", "sequence_key",
           "store_path"]

log = logging.getLogger(__name__)

LEVELS = ("protein", "residue")
DTYPES = ("float32", "float16")
COMPRESSIONS = (None, "gzip", "lzf")
DEFAULT_DTYPE = {"protein": "float32", "residue": "float16"}
DEFAULT_FLUSH_BYTES = 64 << 20  # a shard per ~64 MiB of new features bounds lost work and RAM
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG)
DEFAULT_COMMIT_SECONDS = 120.0  # ... and per ~2 minutes, so a small store's work survives a kill


def store_path(root: str | Path, identity: dict, level: str) -> Path:
    """``root/<model>/<16-hex hash of identity + level>.h5``: one file per encoder identity."""
    if "model" not in identity:
        raise ValueError(f"store identity needs a 'model' entry, got keys {sorted(identity)}")
    canonical = json.dumps({"identity": identity, "level": level}, sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
    return Path(root) / str(identity["model"]) / f"{digest}.h5"


class EmbeddingStore:
    """Per-layer features of sequences for one encoder identity, in one HDF5 file.

    Args:
        path: the HDF5 file (see ``store_path``); its folder is created.
        identity: JSON-serialisable description of everything that changes the numbers
            (``EncoderIdentity.as_dict()``); an existing file must carry the same.
        n_layers, dim: layer outputs and feature dimension D of every row.
        level: ``protein`` (a row is n_layers x D) or ``residue`` (n_layers x L x D).
        dtype: on-disk dtype; default float32 for protein, float16 for residue level.
        compression: None, ``gzip`` or ``lzf`` for the layer datasets.
        flush_bytes: buffered feature bytes after which a writer commits a shard.
        commit_seconds: seconds after which a writer commits its buffer as a shard even
            below ``flush_bytes`` (checked as rows arrive).
    """

    def __init__(
        self,
        path: str | Path,
        identity: dict,
        n_layers: int,
        dim: int,
        level: str = "protein",
        dtype: str | None = None,
        compression: str | None = None,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
        commit_seconds: float = DEFAULT_COMMIT_SECONDS,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"store level must be one of {LEVELS}, got {level!r}")
        dtype = DEFAULT_DTYPE[level] if dtype is None else dtype
        if dtype not in DTYPES:
            raise ValueError(f"store dtype must be one of {DTYPES}, got {dtype!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"store compression must be one of {COMPRESSIONS}, "
                             f"got {compression!r}")
        if int(n_layers) < 1 or int(dim) < 1:
            raise ValueError(f"store needs n_layers >= 1 and dim >= 1, got {n_layers}, {dim}")
        try:
            self.identity_json = json.dumps(identity, sort_keys=True)
        except TypeError as err:
            raise ValueError(f"store identity is not JSON-serialisable: {err}") from err
        self.path = Path(path)
        self.identity = json.loads(self.identity_json)  # as it reads back from the file
        self.n_layers, self.dim, self.level = int(n_layers), int(dim), level
        self.dtype, self.compression, self.flush_bytes = dtype, compression, int(flush_bytes)
        if not float(commit_seconds) > 0:
            raise ValueError(f"store.commit_seconds must be > 0, got {commit_seconds}")
        self.commit_seconds = float(commit_seconds)
        self.shard_dir = self.path.with_name(self.path.name + ".shards")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path) + ".lock")
        self._index: dict[str, int] = {}
        self._lengths = np.zeros(0, dtype=np.int64)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._generation: str | None = None
        try:
            # Repair only when nobody is writing: a live writer's temp files are not stray.
            with self._lock.acquire(timeout=0):
                self._repair()
        except Timeout:
            log.info("%s is being written by another process; reading its last complete state",
                     self.path)
        self._load_index()

    # ----------------------------------------------------------------- attributes & index
    def attributes(self) -> dict:
        """Root attributes of a new file (it gets the store's name only once closed)."""
        return {
            "identity": self.identity_json, "level": self.level, "dtype": self.dtype,
            "n_layers": self.n_layers, "dim": self.dim, "format_version": FORMAT_VERSION,
            "generation": uuid.uuid4().hex, "complete": True, **package_versions(),
        }

    def _check_file(self, handle: h5py.File, path: Path) -> None:
        expected = {"level": self.level, "dtype": self.dtype, "n_layers": self.n_layers,
                    "dim": self.dim}
        check_store_file(handle, path, expected, self.identity)

    def _load_index(self, handle: h5py.File | None = None) -> None:
        if handle is None:
            if not self.path.exists():
                self._index, self._generation = {}, None
                self._lengths = np.zeros(0, dtype=np.int64)
                self._offsets = np.zeros(1, dtype=np.int64)
                return
            with open_store_file(self.path) as opened:
                self._load_index(opened)
            return
        self._check_file(handle, self.path)
        source = MergeSource(handle, self.level, self.n_layers)
        self._index = {key.decode("ascii"): row for row, key in enumerate(source.keys)}
        self._lengths, self._offsets = source.lengths, source.offsets
        self._generation = str(handle.attrs["generation"])

    def _open_current(self) -> h5py.File:
        """Open the main file, reloading the index first if another writer replaced it."""
        if not self.path.exists():
            raise StoreError(f"{self.path}: the store file is missing")
        handle = open_store_file(self.path)
        if str(handle.attrs.get("generation")) != self._generation:
            try:
                self._load_index(handle)
            except BaseException:
                handle.close()
                raise
        return handle

    def refresh(self) -> None:
        """Re-read the row index from disk (other processes may have added rows)."""
        self._load_index()

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, sequence: object) -> bool:
        return isinstance(sequence, str) and sequence_key(sequence) in self._index

    def keys(self) -> list[str]:
        """Row keys (hex SHA-256), in file order (sorted)."""
        return list(self._index)

    def missing(self, sequences: Iterable[str]) -> list[str]:
        """Sequences without a row: unique (by key), in first-seen order."""
        seen: set[str] = set()
        absent = []
        for sequence in sequences:
            key = sequence_key(sequence)
            if key not in self._index and key not in seen:
                seen.add(key)
                absent.append(sequence)
        return absent

    def _rows_of(self, sequences: Sequence[str]) -> np.ndarray:
        rows = np.empty(len(sequences), dtype=np.int64)
        for i, sequence in enumerate(sequences):
            row = self._index.get(sequence_key(sequence))
            if row is None:
                raise KeyError(f"sequence {_short(sequence)!r} (length {len(sequence)}) is not "
                               f"in the embedding store {self.path}")
            rows[i] = row
        return rows

    def _check_layer(self, layer: int) -> None:
        if not 0 <= int(layer) < self.n_layers:
            raise IndexError(f"layer {layer} out of range 0..{self.n_layers - 1} in {self.path}")

    def read_layer(
        self, layer: int, sequences: Sequence[str], dtype: type | None = np.float32
    ) -> np.ndarray:
        """Features of one layer for ``sequences``, in the order given (repeats allowed).

        Returns protein level: N x D; residue level: sum L_i x D, sequence after sequence.
        ``dtype=None`` keeps the on-disk dtype.
        """
        self._check_layer(layer)
        with self._open_current() as handle:
            rows = self._rows_of(sequences)
            dataset = handle[layer_name(layer)]
            with reading(self.path):
                if self.level == "protein":
                    out = read_protein_rows(dataset, rows)
                else:
                    out = read_residue_rows(dataset, self._offsets, rows)
        return out if dtype is None else out.astype(dtype, copy=False)

    def read_sequence(self, sequence: str, dtype: type | None = np.float32) -> np.ndarray:
        """All layers of one sequence: protein n_layers x D, residue n_layers x L x D."""
        with self._open_current() as handle:
            row = int(self._rows_of([sequence])[0])
            start, end = int(self._offsets[row]), int(self._offsets[row + 1])
            with reading(self.path):
                layers = [handle[layer_name(i)][start:end] for i in range(self.n_layers)]
        out = np.stack(layers)
        out = out[:, 0] if self.level == "protein" else out
        return out if dtype is None else out.astype(dtype, copy=False)

    # ----------------------------------------------------------------- writing
    @contextlib.contextmanager
    def writer(self, flush_bytes: int | None = None) -> Iterator[StoreWriter]:
        """Exclusive writer: ``with store.writer() as w: w.add(seq, feats)``.

        Holds the file lock for the whole block (a second process waits), starts from the
        latest state on disk, and on exit commits the buffer and merges into the main file.
        """
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            log.info("%s: another process is writing it; waiting for %s.lock", self.path,
                     self.path)
            self._lock.acquire()
        try:
            self._repair()
            self._load_index()
            writer = StoreWriter(self, self.flush_bytes if flush_bytes is None else flush_bytes,
                                 self.commit_seconds)
            try:
                yield writer
            except BaseException as err:
                self._close_after_error(writer, err)
                raise
            writer.commit()
            if self._shard_files() or not self.path.exists():
                self._merge()
            self._load_index()
        finally:
            self._lock.release()

    def _close_after_error(self, writer: StoreWriter, err: BaseException) -> None:
        """Keep what can be kept after the writer's block raised; never mask ``err``.

        After a disk error nothing more is written (no retry on a full disk): committed
        shards stay for the next open to merge, the failed file is already deleted.
        Otherwise (interrupt, encoder error) the buffer is committed and merged, as on a
        normal exit, so work done survives; a failure doing so is logged, not raised.
        """
        if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
            log.error("%s: write failed (%s); %d buffered rows dropped, committed shards kept",
                      self.path, err, len(writer._rows))
            self._remove_temporaries()
            return
        try:
            writer.commit()
            if self._shard_files():
                self._merge()
        except Exception as second:  # noqa: BLE001 - the first error is the one to report
            log.error("%s: could not save buffered rows after %r: %s", self.path, err, second)
            self._remove_temporaries()

    def append(self, sequences: Sequence[str], features: Sequence) -> None:
        """Add rows in one writer; ``features[i]`` as for ``StoreWriter.add``."""
        if len(sequences) != len(features):
            raise ValueError(f"append: {len(sequences)} sequences but {len(features)} features")
        with self.writer() as writer:
            for sequence, feats in zip(sequences, features):
                writer.add(sequence, feats)

    def _shard_files(self) -> list[Path]:
        if not self.shard_dir.is_dir():
            return []
        return sorted(p for p in self.shard_dir.glob("*.h5") if p.is_file())

    def _remove_temporaries(self) -> None:
        """Under the lock: delete the main file's and the shards' temp files."""
        stray = [self.path.with_name(self.path.name + ".tmp")]
        if self.shard_dir.is_dir():
            stray += list(self.shard_dir.glob("*.tmp"))
        for path in stray:
            if path.exists():
                log.warning("deleting %s, left by an interrupted writer", path)
                path.unlink()

    def _repair(self) -> None:
        """Under the lock: delete temp files of killed writers, merge committed shards."""
        self._remove_temporaries()
        shards = self._shard_files()
        if shards:
            log.warning("%s: merging %d shard(s) left by an interrupted writer", self.path,
                        len(shards))
            self._merge()

    def _write_shard(self, keys: list[str], lengths: list[int], rows: list[np.ndarray]) -> Path:
        self.shard_dir.mkdir(exist_ok=True)
        numbers = [int(p.stem) for p in self._shard_files() if p.stem.isdigit()]
        final = self.shard_dir / f"{max(numbers, default=-1) + 1:05d}.h5"
        tmp = final.with_name(final.name + ".tmp")
        order = np.argsort(np.asarray(keys))  # shards sorted too: merge reads long runs

        def layer_block(layer: int) -> Iterator[np.ndarray]:
            yield np.concatenate([rows[i][layer].reshape(-1, self.dim) for i in order])

        write_rows_file(tmp, np.asarray(keys, dtype="S64")[order],
                        np.asarray(lengths, dtype=np.int64)[order], layer_block, self)
        os.replace(tmp, final)
        return final

    def _merge(self) -> None:
        """Rewrite main + shards as one key-sorted file, atomically; then drop the shards."""
        shards = self._shard_files()
        paths = ([self.path] if self.path.exists() else []) + shards
        handles = [open_store_file(p) for p in paths]
        try:
            for handle, path in zip(handles, paths):
                self._check_file(handle, path)
            sources = [MergeSource(h, self.level, self.n_layers) for h in handles]
            tmp = self.path.with_name(self.path.name + ".tmp")
            n_rows = merge_sources(tmp, sources, self)
        finally:
            for handle in handles:
                handle.close()
        os.replace(tmp, self.path)
        for shard in shards:
            shard.unlink()
        with contextlib.suppress(OSError):
            self.shard_dir.rmdir()
        log.info("%s: %d rows after merging %d shard(s)", self.path, n_rows, len(shards))
