"""Store retention: ``store.retain=until_done`` deletes a store once all its readers are done.

A sweep of the paper's size embeds far more than a scratch disk holds (``ptransfer plan``
prints the total), but a store is only needed while the cells that read it run. The
sweeper therefore has at most ``store.wave_stores`` store groups under way at once
(``sweep.dispatch``: a group's shard jobs, then its readers; the next group starts when a
group's last job ends), and:

1. **Readers manifest.** At the start of a multirun (ptransfer's sweeper,
   ``sweep.launch``, in the launching process for every launcher: basic, joblib, Slurm;
   ``sweep.readers.StoreReaders`` under another sweeper), the sweep is planned exactly as
   ``ptransfer plan`` does it and, per store, the result folders of the cells that read it
   are written to ``<store_dir>/readers/<store group>/<sweep>.json``.
2. **Done marks.** A finished cell is marked by its own ``status.json`` (state ``done``);
   nothing else is needed, so killed or failed cells simply keep their stores.
3. **Last reader deletes.** After each cell (done, or skipped as already done), the cell
   reads every manifest of its store group; when every listed cell, and itself, is done it
   deletes each store (index file and shard folder) and the manifests, unless a live
   process holds a claim on one of its shards (someone is writing it: kept). Two readers
   finishing at once both delete; deleting what is already gone is a no-op.

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
import os
import shutil
import uuid
from pathlib import Path

from omegaconf import DictConfig

from ptransfer.cell.key import CellKey, cell_key, encoder_identity, is_done
from ptransfer.cell.spec import CellSpec, cell_spec
from ptransfer.embed.claims import is_live, read_claim
from ptransfer.embed.diskspace import size_text

log = logging.getLogger(__name__)

POLICIES = ("all", "until_done")
READERS_DIR = "readers"


def policy(cfg: DictConfig) -> str:
    """``store.retain`` of the config (default ``all``), checked."""
    value = str((cfg.get("store") or {}).get("retain", "all"))
    if value not in POLICIES:
        raise ValueError(f"store.retain must be one of {list(POLICIES)}, got {value!r}")
    return value


def store_group(spec: CellSpec) -> tuple[str, list[Path]]:
    """(group id, store files) of the cell's encoder identity, every level."""
    identity = encoder_identity(spec.encoder)
    # Imported here: the sweep imports this module, and a skipped cell must not pay for torch.
    from ptransfer.embed.store import LEVELS, store_location

    paths = [store_location(spec.store_dir, identity, level, spec.extract)[0].absolute()
             for level in LEVELS]
    digest = hashlib.sha256(json.dumps(sorted(map(str, paths))).encode()).hexdigest()[:16]
    return f"{identity['model']}-{digest}", paths


def _readers_dir(store_dir: Path, group: str) -> Path:
    return Path(store_dir).absolute() / READERS_DIR / group


def write_readers(sweep_dir: str, cells: list[CellSpec]) -> dict[str, list[str]]:
    """Write one readers manifest per store group of ``cells``; returns group -> cell dirs."""
    groups: dict[str, list[str]] = {}
    for spec in cells:
        if not spec.reads_store:
            continue
        group, _ = store_group(spec)
        groups.setdefault(group, []).append(str(cell_key(spec).dir.absolute()))
    if cells:
        write_reader_groups(sweep_dir, cells[0].store_dir, groups)
    return groups


def write_reader_groups(sweep_dir: str, store_dir: Path, groups: dict[str, list[str]]) -> None:
    """``<store_dir>/readers/<group>/<sweep>.json`` for each group: its readers' folders."""
    name = hashlib.sha256(str(Path(sweep_dir).absolute()).encode()).hexdigest()[:12] + ".json"
    for group, readers in groups.items():
        folder = Path(store_dir).absolute() / READERS_DIR / group
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps({"sweep_dir": str(sweep_dir), "readers": readers}, indent=1))
        tmp.replace(folder / name)


def _readers(folder: Path) -> set[str]:
    readers: set[str] = set()
    for manifest in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            readers.update(json.loads(manifest.read_text())["readers"])
        except (OSError, ValueError, KeyError):  # unreadable: keep the store, to be safe
            readers.add(str(manifest))
    return readers


def _being_written(path: Path) -> bool:
    """Whether a live process holds a claim on one of the store's shards (writing it)."""
    from ptransfer.embed.shards import CLAIM_SUFFIX, shard_folder  # h5py: only when retiring

    folder = shard_folder(path)
    claims = folder.glob(f"*{CLAIM_SUFFIX}") if folder.is_dir() else []
    return any(is_live(read_claim(claim)) for claim in claims)


def delete_store(path: Path) -> bool:
    """Delete one store's files (index, shards, manifests, parts); False when a live writer
    holds a claim on one of its shards (it is kept) or there is nothing to delete."""
    from ptransfer.embed.shards import shard_folder

    shards = shard_folder(path)
    if not path.exists() and not shards.exists():
        return False
    if _being_written(path):
        log.info("store %s is being written by another process: kept", path)
        return False
    existed = path.exists() or shards.exists()
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".lock").unlink(missing_ok=True)  # left by ptransfer 0.1
    shutil.rmtree(shards, ignore_errors=True)
    return existed


def retire_if_unread(cfg: DictConfig) -> list[Path]:
    """After a cell: under ``until_done``, delete its stores when every reader is done."""
    if policy(cfg) != "until_done":
        return []
    spec = cell_spec(cfg)
    if not spec.reads_store:
        return []
    group, paths = store_group(spec)
    folder = _readers_dir(spec.store_dir, group)
    readers = _readers(folder) | {str(cell_key(spec).dir.absolute())}
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
    """Delete the half-written files this process left in a failed cell's folder
    (``rows.csv.<pid>.<token>.tmp``, ...; another writer's are its own business) and the
    fixed-name ones of ptransfer < 0.3 (``rows.csv.tmp``)."""
    folder = Path(cell_dir)
    mine = list(folder.glob(f"*.{os.getpid()}.*.tmp")) if folder.is_dir() else []
    old = [p for p in folder.glob("*.tmp") if p.name.count(".") == 2] if folder.is_dir() else []
    for tmp in mine + old:
        try:
            tmp.unlink()
        except OSError as err:
            log.warning("could not delete %s: %s", tmp, err)


def disk_lines(cells: list, wave_stores: int = 1) -> list[str]:
    """``plan``'s lines: total and peak store disk of the cells to run, per retention policy.

    ``cells``: ``PlannedCell`` in sweep order (``disk_bytes`` per dataset and store). A
    multirun under ``until_done`` has at most ``wave_stores`` store groups under way at once
    (``sweep.dispatch``) and deletes each once its readers are done: the peak is at most the
    ``wave_stores`` largest groups together.
    """
    sizes: dict[str, dict[str, float]] = {}
    for cell in cells:
        group = _plan_group(cell)
        if group:
            sizes.setdefault(group, {})[cell.store_key] = cell.disk_bytes
    groups = sorted((sum(parts.values()) for parts in sizes.values()), reverse=True)
    everything = sum(groups)
    size = max(1, int(wave_stores))
    peak = sum(groups[:size])
    return [f"store: retain=all keeps ~{size_text(everything)} (the total); "
            f"retain=until_done peaks at ~{size_text(peak)}",
            f"       (peak: a multirun has at most {size} store group(s) under way at once "
            "(store.wave_stores, default the GPU launcher's parallelism; 1 with the basic "
            "launcher) and deletes each once its readers are done)"]


def _plan_group(cell) -> str | None:
    """The store group of a planned cell: its encoder identity (None: no store)."""
    if cell.disk_bytes <= 0 or not cell.store_key.startswith("["):
        return None
    return json.dumps(json.loads(cell.store_key)[1], sort_keys=True)
