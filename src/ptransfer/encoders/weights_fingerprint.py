"""The content fingerprint of the weights a cell reads: part of its cell key and store identity.

A weights file replaced at the same path (``ptransfer pretrain`` run again into its folder, a
checkpoint downloaded again, a ``save_pretrained`` folder written again) must give new
results, so cells and embedding stores are keyed by what the weights *are*, not by where
they lie:

- a file (fair-esm and CARP ``.pt``, ``ptransfer pretrain``'s checkpoints, ``model.weights``):
  the SHA-256 of its bytes;
- a ``save_pretrained`` folder: the SHA-256 over every file's relative name and SHA-256;
- weights inside an installed Python package (``model.package``: AntiBERTy's folder,
  UniRep's ``.npz`` file): that folder or file, hashed as above;
- a Hugging Face hub snapshot: its commit and each file's blob name, which is the hub's own
  hash of the file (SHA-256 for LFS weight files, git SHA-1 for small ones), so nothing is
  read; a snapshot file that is not a cache symlink is hashed like any other file.

Which weights a cell reads follows the loaders' lookup order (``encoders.weights``,
``encoders.hf_weights``): the checkpoint's own file, else ``model.weights``, else the hub
cache. A cell that reads none (one-hot; ``random_init`` in the full scope) has no
fingerprint (None). Weights not on disk yet have no content to hash: they read
``absent: <where>``, and ``fetch_weights`` (called before a cell runs) downloads them first,
so the cell that runs is keyed by their content.

Hashing is memoised like the task fingerprint (``cell.task_data``): in the process and in
``<cache_dir>/weights_fingerprints.json``, per file, keyed by its resolved path and checked
against its ``[size, mtime_ns, ctime_ns]``. ``ctime_ns``, the inode change time, is set by
the kernel on every write, rename or ``touch`` and cannot be set back, so a file replaced or
edited in place is hashed again even when its size and mtime are restored. Nothing here
loads a model or imports torch. Cost: docs/benchmarks.md (``scripts/bench_fingerprint.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from ptransfer.encoders.weights_location import (
    cached_snapshot,
    checkpoint_path,
    hub_checkpoints_dir,
    package_folder,
)

log = logging.getLogger(__name__)

CACHE_FILE = "weights_fingerprints.json"
CHUNK_BYTES = 16 << 20
_MEMO: dict[str, tuple[list[int], str]] = {}  # resolved path -> (stat, sha256), this process


def reads_weights(model: Mapping, ablation: str, scope: str) -> bool:
    """Whether a cell loads a weights file (the rule of ``encoders.ablations.needs_weights``:
    ``random_init`` in the full scope builds the model from its config alone)."""
    if model.get("family", "onehot") == "onehot":
        return False
    return ablation != "random_init" or scope == "reference"


def weights_location(model: Mapping, checkpoint: str) -> tuple[str, Path | None, str]:
    """(kind, path, where) of the weights of ``checkpoint``: kind ``file`` or ``folder`` (a
    local path, which may be missing), or ``hub`` (a hub snapshot folder, None when it is not
    in the cache); ``where`` names the config key or the hub repository."""
    entries = model.get("checkpoints") or {}
    hf = bool(model.get("repo_id") or model.get("package"))
    kind = "folder" if hf else "file"
    if str(checkpoint) != "final":
        entry = entries.get(str(checkpoint)) or {}
        path = checkpoint_path(entry)
        return kind, path, f"model.checkpoints.{checkpoint}"
    if model.get("weights"):
        return kind, Path(str(model["weights"])).expanduser(), "model.weights"
    if model.get("package"):  # weights shipped inside an installed Python package
        package = model["package"]
        return "folder", package_folder(package), f"model.package ({package['name']})"
    if hf:
        found = cached_snapshot(str(model["repo_id"]), model.get("revision"))
        where = f"{model['repo_id']}@{model.get('revision') or 'main'}"
        return "hub", found[1] if found else None, where
    return "file", hub_checkpoints_dir() / f"{model['name']}.pt", "hub cache"


def weights_fingerprint(model: Mapping, checkpoint: str, ablation: str, scope: str,
                        cache_dir: str | Path | None = None) -> str | None:
    """The fingerprint of the weights a cell reads (None when it reads none).

    ``model`` is the resolved model config; ``cache_dir`` holds the on-disk memo (the
    results folder; None keeps it in the process only).
    """
    if not reads_weights(model, ablation, scope):
        return None
    kind, path, where = weights_location(model, checkpoint)
    if path is None or not path.exists():
        return f"absent: {where} {path or ''}".rstrip()
    memo = _DiskMemo(cache_dir)
    if kind == "hub":
        return "hub:" + _snapshot_digest(path, memo)
    if path.is_dir():
        return "folder:" + _folder_digest(path, memo)
    return "sha256:" + memo.file_digest(path)


def fetch_weights(model: Mapping, checkpoint: str, ablation: str, scope: str) -> bool:
    """Download the weights a cell will read when they are not on disk yet (the loaders'
    own download functions); True when something was downloaded, so the caller re-keys.

    A local path that is missing is left to the loader, whose error names the key.
    """
    if not reads_weights(model, ablation, scope):
        return False
    kind, path, _ = weights_location(model, checkpoint)
    if path is not None and path.exists() or model.get("package"):
        return False  # nothing to download: a missing package is the loader's clear error
    if kind == "hub":
        from ptransfer.encoders.hf_weights import model_directory

        model_directory(str(model["repo_id"]), model.get("revision"), None)
        return True
    entry = (model.get("checkpoints") or {}).get(str(checkpoint)) or {}
    if str(checkpoint) != "final" and entry.get("url") and not entry.get("path"):
        from ptransfer.encoders.weights import fetch_checkpoint

        fetch_checkpoint(str(checkpoint), entry)
        return True
    if str(checkpoint) == "final" and not model.get("weights"):
        from ptransfer.encoders.base import CheckpointRef
        from ptransfer.encoders.weights import weights_file

        weights_file(str(model["family"]), str(model["name"]), CheckpointRef("final"), None)
        return True
    return False


def _folder_digest(folder: Path, memo: _DiskMemo) -> str:
    """SHA-256 over (relative name, SHA-256) of every file below ``folder``, in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in name.split("/")):
            continue  # .cache/, .gitattributes: bookkeeping, not weights
        digest.update(f"{name}\0{memo.file_digest(path)}\n".encode())
    return digest.hexdigest()


def _snapshot_digest(snapshot: Path, memo: _DiskMemo) -> str:
    """``<commit>:<digest>`` of a hub snapshot: blob names of its cache symlinks (the hub's
    hashes), or the SHA-256 of a file that is not one."""
    digest = hashlib.sha256()
    blobs = (repo_cache_dir_of(snapshot) / "blobs").resolve()
    for path in sorted(p for p in snapshot.rglob("*") if p.is_file()):
        target = path.resolve()
        blob = target.name if path.is_symlink() and target.parent == blobs else None
        digest.update(f"{path.relative_to(snapshot).as_posix()}\0"
                      f"{blob or memo.file_digest(path)}\n".encode())
    return f"{snapshot.name}:{digest.hexdigest()}"


def repo_cache_dir_of(snapshot: Path) -> Path:
    """``models--org--name`` above ``snapshots/<commit>``."""
    return snapshot.parent.parent


def _stat_key(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


class _DiskMemo:
    """Per-file SHA-256, memoised in the process and in ``<cache_dir>/weights_fingerprints.json``."""

    def __init__(self, cache_dir: str | Path | None) -> None:
        self.path = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
        self._disk: dict | None = None

    def file_digest(self, path: Path) -> str:
        resolved = str(path.resolve())
        stat = _stat_key(path)
        memo = _MEMO.get(resolved)
        if memo is not None and memo[0] == stat:
            return memo[1]
        entry = self._read().get(resolved)
        if entry is not None and entry.get("stat") == stat:
            _MEMO[resolved] = (stat, entry["sha256"])
            return entry["sha256"]
        log.info("fingerprinting weights %s (%.1f MB, once: memoised by size, mtime and ctime)",
                 path, stat[0] / 1e6)
        digest = _sha256(path)
        if _stat_key(path) != stat:  # written while we read: do not memoise a torn read
            return digest
        _MEMO[resolved] = (stat, digest)
        self._write(resolved, stat, digest)
        return digest

    def _read(self) -> dict:
        if self._disk is None:
            try:
                self._disk = json.loads(self.path.read_text()) if self.path else {}
            except (OSError, ValueError):
                self._disk = {}  # absent or torn: hashes are recomputed, nothing is wrong
        return self._disk

    def _write(self, resolved: str, stat: list[int], digest: str) -> None:
        if self.path is None:
            return
        cache = {**self._read(), resolved: {"stat": stat, "sha256": digest}}
        self._disk = cache
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:  # parallel cells: one tmp each; the last rename wins, a lost entry is recomputed
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(cache, indent=1))
            tmp.replace(self.path)
        except OSError as err:  # a read-only results folder only loses the memo
            log.debug("could not memoise weights fingerprints in %s: %s", self.path, err)
            tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()
