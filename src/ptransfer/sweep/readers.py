"""The Hydra callback of store retention: the sweep's readers manifests (``sweep.retention``),
for sweeps run by another sweeper than ptransfer's (which writes them itself).

Its own module because it expands the sweep (``plan``) and applies the design rules
(``sweep``), both of which sit above ``retention`` in the import graph.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ptransfer.cell.spec import cell_spec
from ptransfer.sweep.design import excluded_reason
from ptransfer.sweep.plan import expand_sweep
from ptransfer.sweep.retention import policy, write_readers

log = logging.getLogger(__name__)


class StoreReaders(Callback):
    """Hydra callback: checks ``store.retain``; writes readers manifests for ``until_done``."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        policy(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if policy(config) != "until_done":
            return
        if str(config.hydra.sweeper.get("_target_", "")).endswith("TwoPhaseSweeper"):
            return  # ptransfer's sweeper writes them from its own plan (sweep.launch)
        loader = GlobalHydra.instance().config_loader()
        cells = []
        for combo in expand_sweep(config, list(config.hydra.overrides.task)):
            cfg = loader.load_sweep_config(config, combo)  # what each job will get
            if excluded_reason(cfg) is None:
                cells.append(cell_spec(cfg))
        groups = write_readers(str(config.hydra.sweep.dir), cells)
        log.info("store.retain=until_done: %d stores, each deleted after its last reader",
                 len(groups))
