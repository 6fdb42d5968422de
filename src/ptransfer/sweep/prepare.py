"""What a cell about to run does first: fetch its weights, rebuild its store when asked.

- **Weights.** The cell key holds the content fingerprint of the weights the cell reads
  (``encoders.weights_fingerprint``). Weights not downloaded yet have no content to hash, so
  they are fetched here, before the cell runs, and the cell is keyed again: the cell that
  runs, and every later re-run, is keyed by their content.
- **``store.rebuild=true``.** ``force=true`` re-fits the probes and rewrites the rows and
  predictions but reads the embedding store as it is (only missing sequences are embedded).
  ``store.rebuild=true`` deletes the cell's stores first, with the deletion store retention
  uses (``sweep.retention.delete_store``: its index and shards, unless a live writer holds
  a claim), so
  every sequence is embedded again. A store is rebuilt once per command: the cells of one
  sweep that share it read the rebuilt store (a marker in ``<store_dir>/rebuilt/`` names the
  sweep that rebuilt it).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ptransfer.cell.key import CellKey, cell_key
from ptransfer.cell.spec import cell_spec, reads_store
from ptransfer.encoders.weights_fingerprint import fetch_weights
from ptransfer.sweep.retention import delete_store, store_group

log = logging.getLogger(__name__)

REBUILT_DIR = "rebuilt"  # under store_dir


def prepare_cell(cfg: DictConfig, key: CellKey) -> CellKey:
    """Fetch the cell's weights (re-keying it when they were downloaded), then rebuild its
    stores when ``store.rebuild`` is set; returns the cell's key."""
    from omegaconf import OmegaConf

    model = OmegaConf.to_container(cfg.model, resolve=True)
    if fetch_weights(model, str(cfg.checkpoint), cfg.ablation.name,
                     cfg.ablation.get("scope", "full")):
        key = cell_key(cell_spec(cfg))
    if (cfg.get("store") or {}).get("rebuild", False):
        rebuild_stores(cfg)
    return key


def _command_id() -> str:
    """The sweep (or single run) this process works for: its Hydra output folder."""
    try:
        hydra = HydraConfig.get()
    except ValueError:  # not under Hydra (a test calling run_job): this process
        return f"pid {os.getpid()}"
    return command_id(hydra.sweep.dir if hydra.mode.name == "MULTIRUN" else hydra.run.dir)


def command_id(output_dir: str | Path) -> str:
    """A command's id for the rebuilt markers: its output folder, absolute."""
    return str(Path(output_dir).absolute())


def rebuild_stores(cfg: DictConfig, command: str | None = None) -> list[Path]:
    """Delete the cell's stores unless this command rebuilt them already; returns the
    deleted files."""
    spec = cell_spec(cfg)
    if not spec.reads_store:
        log.info("store.rebuild=true: this cell reads no embedding store")
        return []
    group, paths = store_group(spec)
    return rebuild_group(Path(cfg.store_dir), group, paths, command or _command_id())


def rebuild_group(store_dir: Path, group: str, paths: list[Path], command: str) -> list[Path]:
    """Delete one store group's files, once per ``command`` (a marker names it)."""
    marker = store_dir.absolute() / REBUILT_DIR / f"{group}.json"
    try:
        if json.loads(marker.read_text()).get("by") == command:
            return []  # an earlier cell of this sweep rebuilt it: read it
    except (OSError, ValueError):
        pass
    deleted = [path for path in paths if delete_store(path)]
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"by": command}))
    tmp.replace(marker)
    for path in deleted:
        log.info("store.rebuild=true: deleted %s; every sequence is embedded again", path)
    for path in (p for p in paths if p.exists()):
        log.warning("store.rebuild=true: %s is being written by another process: kept", path)
    return deleted


class SweepPreparation:
    """What a two-phase multirun does once, before planning its phases for good.

    Called as ``sweep.jobs.plan_sweep``'s ``each`` hook, it notes the weights the cells to
    run read and, under ``store.rebuild=true``, their store groups. ``fetch`` downloads the
    weights not on disk yet (the sweep is then planned again: their content keys cells and
    stores); ``rebuild`` deletes the stores once for the sweep (the phase-2 cells find the
    sweep's marker and read what phase 1 re-extracted).
    """

    def __init__(self, command: str) -> None:
        self.command = command
        self.weights: dict[str, tuple] = {}
        self.groups: dict[str, tuple[Path, list[Path]]] = {}

    def __call__(self, cell, cfg: DictConfig) -> None:
        from omegaconf import OmegaConf

        if not cell.to_run:
            return
        model = OmegaConf.to_container(cfg.model, resolve=True)
        args = (str(cfg.checkpoint), cfg.ablation.name, cfg.ablation.get("scope", "full"))
        self.weights.setdefault(json.dumps([model, *args], sort_keys=True, default=str),
                                (model, *args))
        if (cfg.get("store") or {}).get("rebuild", False) and reads_store(cfg):
            group, paths = store_group(cell_spec(cfg))
            self.groups.setdefault(group, (Path(cfg.store_dir), paths))

    def fetch(self) -> bool:
        """Download missing weights; True when anything was downloaded. Weights that cannot
        be had are left to the jobs that read them: they fail with the loader's error."""
        fetched = False
        for model, *args in self.weights.values():
            try:
                fetched = fetch_weights(model, *args) or fetched
            except Exception as err:  # noqa: BLE001 - reported by the cells that need them
                log.warning("weights of %s (%s) not fetched: %s", model.get("name"), args[0],
                            err)
        return fetched

    def rebuild(self) -> bool:
        """Delete the stores to rebuild; True when any file was deleted."""
        return any([rebuild_group(store_dir, group, paths, self.command)
                    for group, (store_dir, paths) in self.groups.items()])
