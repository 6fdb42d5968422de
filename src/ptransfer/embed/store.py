"""The HDF5 embedding store: one per encoder identity, rows keyed by sequence hash, in shards.

A row holds the per-layer features of one sequence. Rows are keyed by ``sequence_key``
(SHA-256 of the sequence), so tasks that share sequences (GB1's splits share all 8,733)
embed them once. Every file is plain HDF5; h5py alone reads it. The store at ``<name>.h5``:

    <name>.h5              index file: every row's key, length (offsets), its source shard,
                           and each layer as a virtual dataset over the shards (readable as
                           one file; see ``embed.store_index``)
    <name>.h5.shards/      <shard>.h5     immutable shard files, each with the schema below
                           <shard>.json   its manifest: keys, lengths, rows, size, SHA-256

    keys        N            |S64   hex SHA-256 of each sequence (sorted within a shard)
    lengths     N            int64  residues of each sequence
    offsets     N + 1        int64  residue level only: row i is rows offsets[i]:offsets[i+1]
                                    of every layer dataset
    layer_000 ... layer_{n_layers-1}
                N x D        protein level (pooled features; float32 by default)
                sum L x D    residue level (per-residue features; float16 by default)
    root attributes: identity (JSON), level, dtype, n_layers, dim, format_version,
                     ptransfer / torch / fair-esm / sequence-models versions,
                     generation, complete=True

No lock: each shard has one writer, which publishes it by an atomic rename (``embed.shards``);
readers only ever see published shards, so every row read is whole, and sequences not yet
embedded are reported by ``missing``. A killed writer leaves its committed parts, which the
next writer of that shard adopts (``embed.store_writer``). Stores written before shards (one
main file at ``<name>.h5``) still read; their first new shard moves the old file into the
shard folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ptransfer.embed.settings import ExtractSettings
from ptransfer.embed.shards import shard_folder
from ptransfer.embed.store_files import (
    FORMAT_VERSION,
    StoreError,
    check_store_file,
    layer_name,
    open_store_file,
    package_versions,
    read_protein_rows,
    read_residue_rows,
    reading,
    sequence_key,
)
from ptransfer.embed.store_files import short as _short
from ptransfer.embed.store_index import StoreView, check_source, finalize, load_view
from ptransfer.embed.store_writer import (
    PartsFolder,
    StoreWriter,
    close_after_error,
    publish_parts,
)

__all__ = ["EmbeddingStore", "StoreError", "StoreWriter", "layer_name", "sequence_key",
           "store_location", "store_path"]

log = logging.getLogger(__name__)

LEVELS = ("protein", "residue")
DTYPES = ("float32", "float16")
COMPRESSIONS = (None, "gzip", "lzf")
DEFAULT_DTYPE = {"protein": "float32", "residue": "float16"}
DEFAULT_FLUSH_BYTES = 64 << 20  # a part per ~64 MiB of new features bounds lost work and RAM
DEFAULT_COMMIT_SECONDS = 120.0  # ... and per ~2 minutes, so a small store's work survives a kill
MAX_OPEN_FILES = 128  # shard files a store keeps open between reads


def store_path(root: str | Path, identity: dict, level: str) -> Path:
    """``root/<model>/<16-hex hash of identity + level>.h5``: one store per encoder identity."""
    if "model" not in identity:
        raise ValueError(f"store identity needs a 'model' entry, got keys {sorted(identity)}")
    canonical = json.dumps({"identity": identity, "level": level}, sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
    return Path(root) / str(identity["model"]) / f"{digest}.h5"


def store_location(store_dir: str | Path, identity: dict, level: str,
                   extract: ExtractSettings):
    """``(path, identity, dtype)`` of the store a cell of this level reads.

    A non-default pooled dtype (``extract.pooled_dtype=float16``) is part of the identity,
    so float16 and float32 stores of one encoder are separate files; the default leaves
    the identity (and so every existing store's path) unchanged.
    """
    if level == "residue":
        dtype = extract.residue_dtype
    else:
        dtype = extract.pooled_dtype or "float32"
        if dtype != "float32":
            identity = {**identity, "pooled_dtype": dtype}
    return store_path(store_dir, identity, level), identity, dtype


class EmbeddingStore:
    """Per-layer features of sequences for one encoder identity, in shard files.

    Args:
        path: the store's index file (see ``store_path``); its folder is created.
        identity: JSON-serialisable description of everything that changes the numbers
            (``EncoderIdentity.as_dict()``); existing files must carry the same.
        n_layers, dim: layer outputs and feature dimension D of every row.
        level: ``protein`` (a row is n_layers x D) or ``residue`` (n_layers x L x D).
        dtype: on-disk dtype; default float32 for protein, float16 for residue level.
        compression: None, ``gzip`` or ``lzf`` for the layer datasets.
        flush_bytes: buffered feature bytes after which a writer commits a part.
        commit_seconds: seconds after which a writer commits its buffer as a part even
            below ``flush_bytes`` (checked as rows arrive).
        read_only: write nothing, not even a missing manifest or folder (``ptransfer plan``).
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
        read_only: bool = False,
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
        self.shard_dir = shard_folder(self.path)
        self.read_only = read_only
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._view = StoreView()
        self._handles: dict[int, object] = {}
        self._located: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.refresh()

    # ----------------------------------------------------------------- attributes & index
    def attributes(self) -> dict:
        """Root attributes of a new file (shard, part or index)."""
        return {
            "identity": self.identity_json, "level": self.level, "dtype": self.dtype,
            "n_layers": self.n_layers, "dim": self.dim, "format_version": FORMAT_VERSION,
            "generation": uuid.uuid4().hex, "complete": True, **package_versions(),
        }

    def expected_attributes(self) -> dict:
        return {"level": self.level, "dtype": self.dtype, "n_layers": self.n_layers,
                "dim": self.dim}

    def check_file(self, handle, path: Path) -> None:
        """Raise StoreError unless ``handle`` is a complete file of this store."""
        check_store_file(handle, path, self.expected_attributes(), self.identity)

    def _writable(self) -> bool:
        return not self.read_only and os.access(self.path.parent, os.W_OK)

    def refresh(self) -> None:
        """Re-read the row index from disk (other processes may have published shards).

        An index file that cannot be read is derived data: rebuilt from the shards, and
        rewritten at once when this process can write.
        """
        self.close()
        self._view = load_view(self, writable=self._writable())
        if self._view.index_damaged and self._writable():
            finalize(self, self._view)
            self._view.index_damaged = ""

    def finalize(self) -> bool:
        """Write the index file over the current shards when it is out of date."""
        try:
            return finalize(self)
        finally:
            self.refresh()

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._view.index)

    def __contains__(self, sequence: object) -> bool:
        return isinstance(sequence, str) and sequence_key(sequence) in self._view.index

    def has_key(self, key: str) -> bool:
        return key in self._view.index

    def keys(self) -> list[str]:
        """Row keys (hex SHA-256), sorted."""
        return sorted(self._view.index)

    def missing(self, sequences: Iterable[str]) -> list[str]:
        """Sequences without a row: unique (by key), in first-seen order."""
        seen: set[str] = set()
        absent = []
        for sequence in sequences:
            key = sequence_key(sequence)
            if key not in self._view.index and key not in seen:
                seen.add(key)
                absent.append(sequence)
        return absent

    def _locate(self, sequences: Sequence[str], retry: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
        """(source, row) of each sequence; a KeyError names an absent one.

        A sequence not in the view read at open is looked up again after a refresh (another
        process may have published its shard since).
        """
        memo = tuple(sequences)  # a split read layer after layer: keys hashed once
        if memo in self._located:
            return self._located[memo]
        where = np.empty((len(sequences), 2), dtype=np.int64)
        for i, sequence in enumerate(sequences):
            found = self._view.index.get(sequence_key(sequence))
            if found is None and retry:
                self.refresh()
                return self._locate(sequences, retry=False)
            if found is None:
                broken = "".join(f"; shard {name} is broken ({why}): re-run to extract its "
                                 "rows again" for name, why in self._view.broken.items())
                raise KeyError(f"sequence {_short(sequence)!r} (length {len(sequence)}) is not "
                               f"in the embedding store {self.path}{broken}")
            where[i] = found
        if len(self._located) >= 8:
            self._located = {}
        self._located[memo] = (where[:, 0], where[:, 1])
        return self._located[memo]

    def _check_layer(self, layer: int) -> None:
        if not 0 <= int(layer) < self.n_layers:
            raise IndexError(f"layer {layer} out of range 0..{self.n_layers - 1} in {self.path}")

    @contextlib.contextmanager
    def _open_source(self, number: int):
        """A source's open file (kept open for the next read of this view: reading a store
        layer by layer opens each shard once, not once per layer)."""
        source = self._view.sources[number]
        handle = self._handles.pop(number, None)
        if handle is None:
            if not source.path.exists():
                raise StoreError(f"{source.path}: shard of {self.path} is gone (retired by "
                                 "store.retain=until_done, or deleted); re-run to rebuild it")
            handle = open_store_file(source.path)
            try:
                check_source(self, source, handle)
            except BaseException:
                handle.close()
                raise
        self._handles[number] = handle  # most recently used last
        while len(self._handles) > MAX_OPEN_FILES:
            self._handles.pop(next(iter(self._handles))).close()
        with reading(source.path):
            yield source, handle

    def close(self) -> None:
        """Close the files reads keep open (also done by ``refresh`` and on deletion)."""
        for handle in self._handles.values():
            with contextlib.suppress(Exception):
                handle.close()
        self._handles = {}
        self._located = {}

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def read_layer(
        self, layer: int, sequences: Sequence[str], dtype: type | None = np.float32
    ) -> np.ndarray:
        """Features of one layer for ``sequences``, in the order given (repeats allowed).

        Returns protein level: N x D; residue level: sum L_i x D, sequence after sequence.
        ``dtype=None`` keeps the on-disk dtype.
        """
        self._check_layer(layer)
        sources, rows = self._locate(sequences)
        if self.level == "protein":
            out = np.empty((len(sequences), self.dim), dtype=self.dtype)  # N x D
        else:
            lengths = np.array([self._view.sources[s].lengths[r] for s, r in zip(sources, rows)],
                               dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            out = np.empty((int(starts[-1]), self.dim), dtype=self.dtype)  # sum L x D
        for number in np.unique(sources):
            items = np.flatnonzero(sources == number)
            with self._open_source(int(number)) as (source, handle):
                dataset = handle[layer_name(layer)]
                if self.level == "protein":
                    out[items] = read_protein_rows(dataset, rows[items])
                    continue
                block = read_residue_rows(dataset, source.offsets, rows[items])
            sizes = lengths[items]  # each item's residues go to out[starts[i]: starts[i + 1]]
            shift = starts[items] - np.concatenate([[0], np.cumsum(sizes)[:-1]])
            out[np.arange(int(sizes.sum())) + np.repeat(shift, sizes)] = block
        return out if dtype is None else out.astype(dtype, copy=False)

    def read_sequence(self, sequence: str, dtype: type | None = np.float32) -> np.ndarray:
        """All layers of one sequence: protein n_layers x D, residue n_layers x L x D."""
        sources, rows = self._locate([sequence])
        with self._open_source(int(sources[0])) as (source, handle):
            row = int(rows[0])
            start, end = int(source.offsets[row]), int(source.offsets[row + 1])
            layers = [handle[layer_name(i)][start:end] for i in range(self.n_layers)]
        out = np.stack(layers)
        out = out[:, 0] if self.level == "protein" else out
        return out if dtype is None else out.astype(dtype, copy=False)

    # ----------------------------------------------------------------- writing
    @contextlib.contextmanager
    def writer(self, flush_bytes: int | None = None, shard: str | None = None,
               publish: bool = True, index: bool = True) -> Iterator[StoreWriter]:
        """One shard's writer: ``with store.writer() as w: w.add(seq, feats)``.

        ``shard``: the shard's name (a planned shard, ``embed.shards``); default a new one.
        Rows already in the store, or in the shard's committed parts (a killed writer's), are
        skipped. On a normal exit the shard is published (``publish``; ``writer.published``
        says whether this writer's copy became the shard) and the index file written
        (``index``); after an error the buffer is kept as a part, nothing published.
        """
        self.refresh()
        name = shard or f"shard-{uuid.uuid4().hex[:16]}"
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        parts = PartsFolder(self, name)
        writer = StoreWriter(self, parts, self.flush_bytes if flush_bytes is None
                             else flush_bytes, self.commit_seconds)
        try:
            yield writer
        except BaseException as err:
            close_after_error(writer, err)
            raise
        writer.commit()
        if publish:
            writer.published = publish_parts(self, name, parts, {"rows_added": writer.n_added})
        if index:
            self.finalize()
        else:
            self.refresh()

    def append(self, sequences: Sequence[str], features: Sequence, shard: str | None = None
               ) -> None:
        """Add rows as one shard; ``features[i]`` as for ``StoreWriter.add``."""
        if len(sequences) != len(features):
            raise ValueError(f"append: {len(sequences)} sequences but {len(features)} features")
        with self.writer(shard=shard) as writer:
            for sequence, feats in zip(sequences, features):
                writer.add(sequence, feats)

    def _shard_files(self) -> list[Path]:
        """The published shard files, sorted by name."""
        if not self.shard_dir.is_dir():
            return []
        return sorted(p for p in self.shard_dir.glob("*.h5") if p.is_file())

    def published_keys(self) -> frozenset[str]:
        return frozenset(self._view.index)
