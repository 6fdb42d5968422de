"""Shard manifests: ``<shard>.json`` beside each published shard, what it holds and checks.

A manifest lists the shard's sequence keys and lengths (in file order), its feature rows, and
the size and SHA-256 of ``<shard>.h5`` and, for a shard of several files
(``embed.publication``), of every part file (``files``). It is published after the shard, by
the same atomic link, so the first publication wins. ``ptransfer store verify`` checks every
file against it; readers check sizes (a cheap ``stat``) and take the row index from it.

A manifest outlives its shard when the shard file is deleted (by hand, or after damage): such
a manifest is **stale**. The next writer of that shard removes it before publishing
(``drop_orphan_manifest``) and replaces one that reappears with the wrong SHA-256
(``write_manifest``), so a repaired shard is always published with a fresh manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ptransfer.embed.shards import MANIFEST_SUFFIX, publish
from ptransfer.embed.store_files import StoreError

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 2  # 2: ``files`` lists the part files of a shard of several (1: one file)


def file_sha256(path: Path, block: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class FileRecord:
    """One part file of a shard of several: its path relative to the shard folder."""

    file: str
    n_bytes: int
    sha256: str
    n_sequences: int
    n_rows: int

    def as_json(self) -> dict:
        return {"file": self.file, "bytes": self.n_bytes, "sha256": self.sha256,
                "n_sequences": self.n_sequences, "n_rows": self.n_rows}


@dataclass
class Manifest:
    """What a published shard holds; written once, next to it, as ``<shard>.json``."""

    shard: str
    n_bytes: int  # of <shard>.h5
    sha256: str  # of <shard>.h5
    keys: list[str]  # hex SHA-256 of each row's sequence, in file order (part after part)
    lengths: list[int]
    n_rows: int  # feature rows: sequences (protein level) or residues (residue level)
    extra: dict
    files: list[FileRecord] = field(default_factory=list)  # empty: the rows are in <shard>.h5

    def to_json(self) -> str:
        return json.dumps({"format": MANIFEST_FORMAT, "shard": self.shard, "file":
                           self.shard + ".h5", "bytes": self.n_bytes, "sha256": self.sha256,
                           "n_sequences": len(self.keys), "n_rows": self.n_rows,
                           "keys": self.keys, "lengths": self.lengths,
                           "files": [f.as_json() for f in self.files], **self.extra})


def manifest_path(folder: Path, shard: str) -> Path:
    return folder / f"{shard}{MANIFEST_SUFFIX}"


def read_manifest(path: Path) -> Manifest:
    """A manifest file, checked for its fields; a StoreError names the file otherwise."""
    try:
        data = json.loads(Path(path).read_text())
        keys, lengths = list(data["keys"]), [int(n) for n in data["lengths"]]
        files = [FileRecord(str(f["file"]), int(f["bytes"]), str(f["sha256"]),
                            int(f["n_sequences"]), int(f["n_rows"]))
                 for f in data.get("files") or []]
        manifest = Manifest(str(data["shard"]), int(data["bytes"]), str(data["sha256"]), keys,
                            lengths, int(data["n_rows"]), {}, files)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StoreError(f"{path}: unreadable shard manifest ({err}); delete it (the shard's "
                         "next reader writes it again)") from err
    if len(keys) != len(lengths):
        raise StoreError(f"{path}: {len(keys)} keys but {len(lengths)} lengths; delete it")
    if files and sum(f.n_sequences for f in files) != len(keys):
        raise StoreError(f"{path}: its files hold {sum(f.n_sequences for f in files)} "
                         f"sequences but it lists {len(keys)} keys; delete it")
    return manifest


def make_manifest(path: Path, name: str, keys: list[str], lengths: list[int], level: str,
                  extra: dict | None = None, files: list[FileRecord] | None = None
                  ) -> Manifest:
    """The manifest of shard ``name`` whose ``<shard>.h5`` is (or will be linked from) ``path``."""
    lengths = [int(n) for n in lengths]  # numpy ints are not JSON
    n_rows = sum(lengths) if level == "residue" else len(keys)
    return Manifest(name, path.stat().st_size, file_sha256(path), list(keys), lengths,
                    n_rows, dict(extra or {}), list(files or []))


def write_manifest(folder: Path, manifest: Manifest, published_inode: int | None = None
                   ) -> bool:
    """Publish ``<shard>.json`` (first publication wins, as for the shard itself).

    ``published_inode``: the inode of the ``<shard>.h5`` this manifest describes, given by
    the writer that just published it. A manifest already there that records another
    SHA-256 (or cannot be read) then belongs to an earlier file of that name: it is replaced,
    as long as ``<shard>.h5`` is still the file just published.
    """
    final = manifest_path(folder, manifest.shard)
    tmp = folder / f"{manifest.shard}.{uuid.uuid4().hex}.json.tmp"
    tmp.write_text(manifest.to_json())
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    if publish(tmp, final):
        return True
    if published_inode is None:
        return False
    try:
        current = read_manifest(final).sha256
    except StoreError:
        current = None
    shard_file = folder / f"{manifest.shard}.h5"
    with contextlib.suppress(OSError):
        if current != manifest.sha256 and shard_file.stat().st_ino == published_inode:
            tmp.write_text(manifest.to_json())
            os.replace(tmp, final)
            log.info("%s: stale manifest replaced", final)
            return True
    tmp.unlink(missing_ok=True)
    return False


def drop_orphan_manifest(folder: Path, name: str) -> None:
    """Remove ``<shard>.json`` when ``<shard>.h5`` is absent: it describes a file that is gone
    (a manifest is written only after its shard). Renamed aside first, so a reader never sees
    half of it; losing a race to a new publication only means its next reader adopts it."""
    manifest = manifest_path(folder, name)
    if (folder / f"{name}.h5").exists() or not manifest.exists():
        return
    aside = folder / f"{name}.{uuid.uuid4().hex}.stale"
    with contextlib.suppress(FileNotFoundError):
        os.replace(manifest, aside)
        aside.unlink()
        log.info("%s: manifest of a shard file that is gone removed", manifest)
