"""ptransfer's sweeper: ``ptransfer run -m`` as shard extraction and probe jobs, each started
as soon as its inputs are published and a slot of its kind is free.

Thin on purpose: Hydra imports every plugin at start-up, so this module imports nothing of
ptransfer until a sweep runs; the work is ``ptransfer.sweep.launch.run_sweep``. Settings
(``conf/hydra/sweeper/two_phase.yaml``; the name stays from the two-phase sweeper it was):
``params`` (the sweep, as the basic sweeper's), ``extract_launcher`` and ``probe_launcher``
(settings of ``hydra.launcher`` changed for the GPU jobs and for the CPU jobs).
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class TwoPhaseSweeper(Sweeper):
    """Launches a multirun's jobs as their inputs are ready (``ptransfer.sweep.dispatch``)."""

    def __init__(self, max_batch_size: int | None = None, params: dict | None = None,
                 extract_launcher: dict | None = None, probe_launcher: dict | None = None):
        super().__init__()
        self.max_batch_size = max_batch_size  # accepted for compatibility; batches are phases
        self.params = _plain(params)
        self.updates = {"extract": _plain(extract_launcher, resolve=True),
                        "probe": _plain(probe_launcher, resolve=True)}
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None
        self.launchers: dict[str, Launcher] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config

    def launcher(self, phase: str) -> Launcher:
        """The launcher of a phase: ``hydra.launcher`` with that phase's updates."""
        if phase not in self.launchers:
            from hydra.core.plugins import Plugins

            from ptransfer.sweep.launch import launcher_config

            config = launcher_config(self.config, self.updates[phase])
            self.launchers[phase] = Plugins.instance().instantiate_launcher(
                hydra_context=self.hydra_context, task_function=self.task_function,
                config=config)
        return self.launchers[phase]

    def launcher_settings(self, phase: str) -> dict:
        """``hydra.launcher`` as the jobs of a phase get it (plain values)."""
        from ptransfer.sweep.launch import launcher_config

        config = launcher_config(self.config, self.updates[phase])
        return OmegaConf.to_container(config.hydra.launcher, resolve=True)

    def sweep(self, arguments: list[str]) -> Any:
        from ptransfer.sweep.launch import run_sweep

        assert self.config is not None and self.hydra_context is not None
        results = run_sweep(self.config, self.hydra_context.config_loader, self.params,
                            list(arguments), self)
        for result in results:
            _ = result.return_value  # a job that raised: raise here, as Hydra's sweepers do
        return results


def _plain(node, resolve: bool = False) -> dict:
    """A plain dict; launcher settings resolved (``partition: ${hydra.launcher.partition}``),
    sweep params not (Hydra parses them as override strings)."""
    if node is None:
        return {}
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=resolve)
    return dict(node)
