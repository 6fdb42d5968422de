"""What a cell about to run does first: fetch its weights, rebuild its store when asked.

- **Weights.** The cell key holds the content fingerprint of the weights the cell reads
  (``encoders.weights_fingerprint``). Weights not downloaded yet have no content to hash, so
  they are fetched here, before the cell runs, and the cell is keyed again: the cell that
  runs, and every later re-run, is keyed by their content.
- **``store.rebuild=true``.** ``force=true`` re-fits the probes and rewrites the rows and
  predictions but reads the embedding store as it is (only missing sequences are embedded).
  ``store.rebuild=true`` deletes the cell's stores first, with the deletion store retention
  uses (``grid.retention.delete_store``: under the store's lock, its shards included), so
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

from ptransfer.encoders.weights_fingerprint import fetch_weights
from ptransfer.grid.cell import CellKey, cell_key
from ptransfer.grid.retention import delete_store, reads_store, store_group

log = logging.getLogger(__name__)

REBUILT_DIR = "rebuilt"  # under store_dir


def prepare_cell(cfg: DictConfig, key: CellKey) -> CellKey:
    """Fetch the cell's weights (re-keying it when they were downloaded), then rebuild its
    stores when ``store.rebuild`` is set; returns the cell's key."""
    from omegaconf import OmegaConf

    model = OmegaConf.to_container(cfg.model, resolve=True)
    if fetch_weights(model, str(cfg.checkpoint), cfg.ablation.name,
                     cfg.ablation.get("scope", "full")):
        key = cell_key(cfg)
    if (cfg.get("store") or {}).get("rebuild", False):
        rebuild_stores(cfg)
    return key


def _command_id() -> str:
    """The sweep (or single run) this process works for: its Hydra output folder."""
    try:
        hydra = HydraConfig.get()
    except ValueError:  # not under Hydra (a test calling run_job): this process
        return f"pid {os.getpid()}"
    return str(Path(hydra.sweep.dir if hydra.mode.name == "MULTIRUN" else hydra.run.dir)
               .absolute())


def rebuild_stores(cfg: DictConfig) -> list[Path]:
    """Delete the cell's stores unless this command rebuilt them already; returns the
    deleted files."""
    if not reads_store(cfg):
        log.info("store.rebuild=true: this cell reads no embedding store")
        return []
    group, paths = store_group(cfg)
    marker = Path(cfg.store_dir).absolute() / REBUILT_DIR / f"{group}.json"
    command = _command_id()
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
