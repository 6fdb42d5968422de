"""Buffering rows for the embedding store and committing them as shards (by size and time)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from ptransfer.embed.store_files import sequence_key
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
    _index: dict[str, int]

    def _write_shard(self, keys: list[str], lengths: list[int], rows: list) -> Path: ...


class StoreWriter:
    """Buffers rows and commits them as shards; made by ``EmbeddingStore.writer()``."""

    def __init__(self, store: WritableStore, flush_bytes: int, commit_seconds: float) -> None:
        self.store = store
        self.flush_bytes = int(flush_bytes)
        self.commit_seconds = float(commit_seconds)
        self._last_commit = time.monotonic()
        self.n_added = 0
        self._keys: list[str] = []
        self._lengths: list[int] = []
        self._rows: list[np.ndarray] = []
        self._pending: set[str] = set()
        self._bytes = 0

    def add(self, sequence: str, features) -> bool:
        """Buffer one row; returns False (and stores nothing) when the sequence is present.

        ``features``: torch tensor or array, protein level n_layers x D, residue level
        n_layers x len(sequence) x D; converted to the store dtype, must stay finite.
        """
        key = sequence_key(sequence)
        if key in self.store._index or key in self._pending:
            return False
        row = self._validated(sequence, features)
        self._keys.append(key)
        self._lengths.append(len(sequence))
        self._rows.append(row)
        self._pending.add(key)
        self._bytes += row.nbytes
        self.n_added += 1
        # By size (bounds RAM) or by time (bounds the work a kill loses on a small store).
        if (self._bytes >= self.flush_bytes
                or time.monotonic() - self._last_commit >= self.commit_seconds):
            self.commit()
        return True

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
        """Write the buffered rows as one complete shard (no-op when empty)."""
        self._last_commit = time.monotonic()
        if not self._rows:
            return
        shard = self.store._write_shard(self._keys, self._lengths, self._rows)
        log.debug("committed %d rows to %s", len(self._rows), shard)
        self._keys, self._lengths, self._rows, self._bytes = [], [], [], 0
