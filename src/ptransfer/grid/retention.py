"""Store retention: ``store.retain=until_done`` deletes a store once all its readers are done.

A sweep of the paper's size embeds far more than a scratch disk holds (``ptransfer plan``
prints the total), but a store is only needed while the cells that read it run. So:

1. **Readers manifest.** At the start of a multirun (``grid.readers.StoreReaders``, a Hydra callback in
   the launching process for every launcher: basic, joblib, Slurm), the sweep is expanded
   exactly as ``ptransfer plan`` does it (``expand_sweep`` + Hydra's own per-job config
   loader) and, per store, the result folders of the cells that read it are written to
   ``<store_dir>/readers/<store group>/<sweep>.json``.
2. **Done marks.** A finished cell is marked by its own ``status.json`` (state ``done``);
   nothing else is needed, so killed or failed cells simply keep their stores.
3. **Last reader deletes.** After each cell (done, or skipped as already done), the cell
   reads every manifest of its store group; when every listed cell, and itself, is done it
   takes each store's file lock (skipping a store someone is writing) and deletes the store,
   its shards and the manifests. Two readers finishing at once both see "all done"; the
   lock makes the deletion happen once.

A store group is the store files of one encoder identity (the protein- and residue-level
files): both are deleted together when every reader of either is done. A single run (no
manifest) is its own only reader. A cell whose store was retired and is run again
(``force=true``, a new sweep) re-extracts it. Runs outside the sweep that read the same
store at the same time should use ``store.retain=all``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path

from filelock import FileLock, Timeout
from omegaconf import DictConfig

from ptransfer.embed.diskspace import size_text
from ptransfer.grid.cell import CellKey, cell_key, encoder_identity, is_done
from ptransfer.grid.task_data import reads_store  # noqa: F401 - the rule, retention's API

log = logging.getLogger(__name__)

POLICIES = ("all", "until_done")
READERS_DIR = "readers"


def policy(cfg: DictConfig) -> str:
    """``store.retain`` of the config (default ``all``), checked."""
    value = str((cfg.get("store") or {}).get("retain", "all"))
    if value not in POLICIES:
        raise ValueError(f"store.retain must be one of {list(POLICIES)}, got {value!r}")
    return value


def store_group(cfg: DictConfig) -> tuple[str, list[Path]]:
    """(group id, store files) of the cell's encoder identity, every level."""
    identity = encoder_identity(cfg)
    # Imported here: the sweep imports this module, and a skipped cell must not pay for torch.
    from ptransfer.embed.features import store_location
    from ptransfer.embed.store import LEVELS

    paths = [store_location(cfg.store_dir, identity, level, cfg.extract)[0].absolute()
             for level in LEVELS]
    digest = hashlib.sha256(json.dumps(sorted(map(str, paths))).encode()).hexdigest()[:16]
    return f"{identity['model']}-{digest}", paths


def _readers_dir(cfg: DictConfig, group: str) -> Path:
    return Path(cfg.store_dir).absolute() / READERS_DIR / group


def write_readers(sweep_dir: str, cells: list[DictConfig]) -> dict[str, list[str]]:
    """Write one readers manifest per store group of ``cells``; returns group -> cell dirs."""
    groups: dict[str, list[str]] = {}
    folders: dict[str, Path] = {}
    for cfg in cells:
        if not reads_store(cfg):
            continue
        group, _ = store_group(cfg)
        groups.setdefault(group, []).append(str(cell_key(cfg).dir.absolute()))
        folders[group] = _readers_dir(cfg, group)
    name = hashlib.sha256(str(Path(sweep_dir).absolute()).encode()).hexdigest()[:12] + ".json"
    for group, readers in groups.items():
        folders[group].mkdir(parents=True, exist_ok=True)
        tmp = folders[group] / (name + ".tmp")
        tmp.write_text(json.dumps({"sweep_dir": str(sweep_dir), "readers": readers}, indent=1))
        tmp.replace(folders[group] / name)
    return groups


def _readers(folder: Path) -> set[str]:
    readers: set[str] = set()
    for manifest in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            readers.update(json.loads(manifest.read_text())["readers"])
        except (OSError, ValueError, KeyError):  # unreadable: keep the store, to be safe
            readers.add(str(manifest))
    return readers


def delete_store(path: Path) -> bool:
    """Delete one store's files under its lock; False when a writer holds the lock."""
    shards = path.with_name(path.name + ".shards")
    if not path.exists() and not shards.exists():
        return False  # nothing to delete (and no lock file to leave behind)
    lock = FileLock(str(path) + ".lock")
    try:
        with lock.acquire(timeout=0):
            existed = path.exists()
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
            shutil.rmtree(shards, ignore_errors=True)
            return existed
    except Timeout:
        log.info("store %s is being written by another process: kept", path)
        return False


def retire_if_unread(cfg: DictConfig) -> list[Path]:
    """After a cell: under ``until_done``, delete its stores when every reader is done."""
    if policy(cfg) != "until_done" or not reads_store(cfg):
        return []
    group, paths = store_group(cfg)
    folder = _readers_dir(cfg, group)
    readers = _readers(folder) | {str(cell_key(cfg).dir.absolute())}
    pending = [r for r in readers if not is_done(CellKey("", "", Path(r)))]
    if pending:
        log.info("store group %s kept: %d of its %d readers are not done", group,
                 len(pending), len(readers))
        return []
    try:
        deleted = [p for p in paths if delete_store(p)]
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last group gone: no empty readers/ left
            folder.parent.rmdir()
    except OSError as err:  # retiring is housekeeping: never fail a finished cell for it
        log.warning("could not retire the stores of %s: %s", group, err)
        return []
    for path in deleted:
        log.info("store.retain=until_done: deleted %s (all %d readers done)", path, len(readers))
    return deleted


def remove_temporaries(cell_dir: Path) -> None:
    """Delete a failed cell's half-written files (``rows.csv.tmp``, ``status.json.tmp``...)."""
    for tmp in Path(cell_dir).glob("*.tmp") if Path(cell_dir).is_dir() else []:
        try:
            tmp.unlink()
        except OSError as err:
            log.warning("could not delete %s: %s", tmp, err)


def disk_lines(cells: list) -> list[str]:
    """``plan``'s lines: total and peak store disk of the cells to run, per retention policy.

    ``cells``: ``PlannedCell`` in sweep order (``disk_bytes`` per dataset and store). Under
    ``until_done`` a store lives from its first reader to its last one, in that order.
    """
    group_of = {c.cell_id: _plan_group(c) for c in cells}
    last = {group_of[c.cell_id]: i for i, c in enumerate(cells) if group_of[c.cell_id]}
    live: dict[str, dict[str, float]] = {}
    total: dict[str, float] = {}
    peak = 0.0
    for i, cell in enumerate(cells):
        group = group_of[cell.cell_id]
        if not group:
            continue
        live.setdefault(group, {})[cell.store_key] = cell.disk_bytes
        total[cell.store_key] = cell.disk_bytes
        peak = max(peak, sum(sum(parts.values()) for parts in live.values()))
        if last[group] == i:
            del live[group]
    everything = sum(total.values())
    return [f"store: retain=all keeps ~{size_text(everything)} (the total); "
            f"retain=until_done peaks at ~{size_text(peak)}",
            "       (peak: cells in sweep order, one at a time, as the basic launcher runs "
            "them; a launcher running P cells at once can hold up to P-1 more stores)"]


def _plan_group(cell) -> str | None:
    """The store group of a planned cell: its encoder identity (None: no store)."""
    if cell.disk_bytes <= 0 or not cell.store_key.startswith("["):
        return None
    return json.dumps(json.loads(cell.store_key)[1], sort_keys=True)
