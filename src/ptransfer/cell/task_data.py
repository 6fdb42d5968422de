"""A cell's task: loading it, its content fingerprint (memoised), its declared shape checked.

The cell key includes ``Task.fingerprint()`` (SHA-256 over every split's sequences and
targets), so an edited data file means a new cell. Loading a task to fingerprint it costs
seconds for the big ones, and a re-run of a finished sweep must not pay that per cell, so
fingerprints are memoised:

- in the process, keyed by the cache key below (a sweep's cells of one task share one load);
- on disk in ``results_dir/task_fingerprints.json``: cache key -> {fingerprint, files}.

The cache key is the SHA-256 of the resolved task config, ``subsample`` and the package
version; ``files`` is ``[path, size, mtime_ns, ctime_ns]`` of every file the config can read from
(each string value of the task config naming an existing file, or every file below an
existing directory such as ``data.root``) plus the ``ptransfer.tasks`` source files (a
changed loader changes the content too). An entry is used only when every listed file still
has its size, mtime_ns and ctime_ns and no file appeared or vanished; otherwise the task is
loaded and fingerprinted again. ``ctime_ns``, the inode change time, is set by the kernel on
every write, rename, ``chmod`` or ``touch`` and cannot be set back (``touch -d`` restores
the mtime, not the ctime), so an edit that keeps the size and mtime is still seen.
Over-invalidation (an unrelated file under ``data.root`` touched, a copy or ``chmod``) costs
one reload, never a wrong key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import hydra

import ptransfer
from ptransfer.cell.spec import TaskRef
from ptransfer.tasks.base import Task

log = logging.getLogger(__name__)

CACHE_FILE = "task_fingerprints.json"
FINGERPRINT_CHARS = 16  # the prefix written to the rows' data_fingerprint column
_TASKS_SOURCE = Path(ptransfer.__file__).resolve().parent / "tasks"
_MEMO: dict[str, tuple[list, str]] = {}  # cache key -> (files, fingerprint), this process
# The last task loaded to fingerprint it: the cell that asked for its key runs next and
# fits exactly this task, so it is not loaded twice. One entry: a task can be large.
_LAST: dict[str, tuple[str, list, Task]] = {}
# Tasks that failed to load (data missing): not retried, nor warned about, until their files
# change (a plan of hundreds of cells on a machine without the data asks once per task).
_FAILED: dict[str, tuple[list, Exception]] = {}


def load_task(ref: TaskRef, results_dir: str | Path) -> Task:
    """The task a cell fits: the loaded task config, subsampled when ``subsample`` is set.

    Reuses the task loaded by the last ``task_fingerprint`` when its config and files are
    unchanged, so callers must treat the returned task as read-only (derive, never mutate).
    """
    key, files = _cache_key(ref), _source_files(ref, results_dir)
    last = _LAST.get("task")
    if last is not None and last[0] == key and last[1] == files:
        return last[2]
    task = _load(ref)
    _LAST["task"] = (key, files, task)
    return task


def _load(ref: TaskRef) -> Task:
    task: Task = hydra.utils.instantiate(ref.config, _convert_="all")
    if ref.subsample:
        # A fixed draw, not the cell seed: every arm of a comparison sees the same sequences.
        task = task.subsample(dict(ref.subsample), seed=0)
    return task


def check_declared_shape(ref: TaskRef, task: Task) -> None:
    """Refuse a task whose loaded shape differs from its declared one (plan would be wrong)."""
    declared = ref.declared_shape
    if declared != (task.level, task.kind):
        raise ValueError(
            f"task {task.name!r} ({ref.config.get('_target_')}) loaded as {task.level} "
            f"{task.kind} but its config declares {declared[0]} {declared[1]}; add its loader "
            f"to RESIDUE_LOADERS in cell/spec.py or set task.kind")


def _cache_key(ref: TaskRef) -> str:
    blob = json.dumps({
        "task": ref.config,
        "subsample": ref.subsample,
        "version": ptransfer.__version__,
    }, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _source_files(ref: TaskRef, results_dir: str | Path) -> list[list]:
    """[path, size, mtime_ns, ctime_ns] of every file the task config can read, and the
    loaders' code."""
    paths: set[Path] = set(_TASKS_SOURCE.glob("*.py"))
    outputs = Path(results_dir).expanduser().resolve()  # our own writes are not inputs
    for value in ref.config.values():
        if not isinstance(value, str) or not value or value.startswith("ptransfer."):
            continue
        path = Path(value).expanduser().resolve()
        if path.is_file():
            paths.add(path)
        elif path.is_dir():
            paths.update(Path(root) / name for root, _, names in os.walk(path) for name in names)
    files = []
    for path in sorted(paths):
        if path.is_relative_to(outputs):
            continue
        try:
            stat = path.stat()
        except OSError:  # vanished while walking: leave it out (the next look sees it gone)
            continue
        files.append([str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns])
    return files


def _cache_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / CACHE_FILE


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # absent or torn: every fingerprint is recomputed, nothing is wrong


def _write_cache(path: Path, key: str, files: list, fingerprint: str) -> None:
    cache = _read_cache(path)
    cache[key] = {"fingerprint": fingerprint, "files": files}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # parallel cells: one tmp each
    tmp.write_text(json.dumps(cache, indent=1))
    tmp.replace(path)


def remember_fingerprint(ref: TaskRef, results_dir: str | Path, task: Task) -> str:
    """Fingerprint a task just loaded for ``ref`` and memoise it (process and disk)."""
    key, files = _cache_key(ref), _source_files(ref, results_dir)
    fingerprint = task.fingerprint()
    _MEMO[key] = (files, fingerprint)
    _write_cache(_cache_path(results_dir), key, files, fingerprint)
    return fingerprint


def task_fingerprint(ref: TaskRef, results_dir: str | Path, load: bool = True) -> str | None:
    """The fingerprint of the task ``ref`` loads, from the memo when its files are unchanged.

    With ``load=False`` a cache miss returns None instead of loading the task.
    """
    key, files = _cache_key(ref), _source_files(ref, results_dir)
    memo = _MEMO.get(key)
    if memo is not None and memo[0] == files:
        return memo[1]
    entry = _read_cache(_cache_path(results_dir)).get(key)
    if entry is not None and entry.get("files") == files:
        _MEMO[key] = (files, entry["fingerprint"])
        return entry["fingerprint"]
    if not load:
        return None
    failed = _FAILED.get(key)
    if failed is not None and failed[0] == files:
        raise failed[1]
    try:
        task = load_task(ref, results_dir)
    except Exception as err:
        _FAILED[key] = (files, err)
        log.warning("task %s cannot be loaded to fingerprint it: %s", ref.name, err)
        raise
    return remember_fingerprint(ref, results_dir, task)
