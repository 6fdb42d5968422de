"""Disk space for embedding stores: the size formula, the free-space check, safe file writes.

Why a guarded file: when HDF5 itself meets a failed ``write`` (ENOSPC, EIO), the file it was
writing can no longer be closed; h5py 3.16 / HDF5 2.0 then crash the interpreter when the
half-open file is finally released (a segfault at exit, or at the next ``h5py.File`` of the
same name). ``GuardedFile`` is the file object HDF5 writes through (h5py's file-object
driver): it records the first OS error and reports success to HDF5, so HDF5 always closes
the file cleanly; the caller then deletes the file and raises the recorded error. HDF5
never sees a failure, Python sees every one.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path

import numpy as np

# HDF5 metadata, chunk index and checksums on top of the raw feature bytes: a few per cent
# (measured ~0.1 % on GB1-sized stores); the margin keeps the free-space check conservative.
OVERHEAD_FRACTION = 0.02
OVERHEAD_BYTES = 1 << 20
MERGE_BYTES = 64 << 20  # a shard's parts up to this much in all are merged (copied) into one file


def expected_store_bytes(n_rows: int, n_layers: int, dim: int, dtype: str) -> float:
    """Bytes on disk of ``n_rows`` feature rows x ``n_layers`` layers x ``dim`` in ``dtype``.

    ``n_rows``: sequences for a protein-level (pooled) store, residues for a residue-level
    one. Raw feature bytes only; keys/lengths add 72 bytes per sequence, negligible next to
    n_layers x dim values. ``ptransfer plan`` and the pre-extraction check both use this.
    """
    return float(n_rows) * int(n_layers) * int(dim) * np.dtype(dtype).itemsize


def needed_for_extraction(new_bytes: float, existing_bytes: float) -> float:
    """Free bytes an extraction needs: the new rows, written once as a shard's parts.

    Parts become the published shard without a copy (``embed.publication``), except that a
    shard's parts of at most ``MERGE_BYTES`` in all are merged into one file: so the peak is
    ``existing + new + min(new, MERGE_BYTES)`` (plus HDF5 overhead).
    """
    total = existing_bytes + new_bytes + min(new_bytes, MERGE_BYTES)
    return total * (1.0 + OVERHEAD_FRACTION) + OVERHEAD_BYTES if new_bytes > 0 else 0.0


def _existing_ancestor(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(directory: str | Path) -> int:
    """Free bytes for an unprivileged writer on the filesystem holding ``directory``."""
    return shutil.disk_usage(_existing_ancestor(Path(directory))).free


def size_text(n_bytes: float) -> str:
    """``0.23 MB``, ``1.52 GB``, ``758.4 GB``: readable at every scale a store has."""
    if n_bytes < 1e9:
        return f"{n_bytes / 1e6:.2f} MB"
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes < 1e10 else f"{n_bytes / 1e9:.1f} GB"


class DiskSpaceError(OSError):
    """Not enough free disk for a write that has not started; the message names the numbers."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def check_free_space(directory: str | Path, needed: float, what: str) -> None:
    """Raise DiskSpaceError unless ``directory``'s filesystem has ``needed`` bytes free."""
    free = free_bytes(directory)
    if needed > free:
        raise DiskSpaceError(
            f"not enough disk for {what}: needs about {size_text(needed)} ({int(needed)} "
            f"bytes), only {size_text(free)} ({free} bytes) free in {Path(directory)}; free "
            "some space, or point store_dir= at a larger disk, or use extract.pooled_dtype="
            "float16 / store.retain=until_done")


class GuardedFile(io.RawIOBase):
    """A binary file for h5py's file-object driver that never reports a write error to HDF5.

    The first OSError of ``write``/``truncate`` is kept in ``error`` (later writes are
    skipped, the file is truncated to give the space back at once); the caller checks
    ``error`` after closing the HDF5 file and deletes the file. Reads of skipped regions
    return zeros (HDF5 may read back metadata it wrote; the file is discarded anyway).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._raw = open(self.path, "w+b", buffering=0)  # noqa: SIM115 - closed in close()
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = self._raw.readinto(view) or 0
        if self.error is not None and n < len(view):
            view[n:] = b"\0" * (len(view) - n)
            n = len(view)
        return n

    def _failed(self, err: OSError) -> None:
        if self.error is None:
            self.error = err
            try:  # give the space back now: the file is garbage from here on
                self._raw.truncate(0)
            except OSError:
                pass

    def write(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        size = len(view)
        if self.error is None:
            try:
                while len(view):
                    view = view[self._raw.write(view):]
            except OSError as err:
                self._failed(err)
        if self.error is not None:
            self._raw.seek(size, io.SEEK_CUR)  # HDF5 tracks positions itself; keep it happy
        return size

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self._raw.truncate(size)
            except OSError as err:
                self._failed(err)
        return self.tell() if size is None else size

    def flush(self) -> None:
        return None

    def sync(self) -> None:
        """fsync the bytes written so far (its own OSError, if any, is recorded too)."""
        if self.error is None:
            try:
                os.fsync(self._raw.fileno())
            except OSError as err:
                self._failed(err)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
