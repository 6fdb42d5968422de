"""Running a multirun in two phases, for every launcher (the sweeper's work, Hydra-free).

The two-phase sweeper (``hydra_plugins/ptransfer_sweeper``, the default ``hydra/sweeper``)
hands its launch step to ``run_sweep``:

1. Plan (``sweep.jobs.plan_sweep``, as ``ptransfer plan`` does): which combinations are
   cells of the design, which are done, which stores their readers need, and those
   stores' shards with work left. Excluded and done combinations get no job at all (they
   are recorded in ``<sweep dir>/not_launched.json`` for the summary).
2. Per *wave* of stores (all of them with ``store.retain=all``; ``sweep.jobs.wave_size``
   store groups at a time with ``until_done``, so disk holds one wave):
   - **phase 1** with the extraction launcher (``hydra.launcher`` updated by
     ``hydra.sweeper.extract_launcher``): one job per shard (``sweep.shard_job``), plus
     the streaming cells (they run a model as they fit);
   - the wave's stores are finalized (their index files written, ``embed.store_index``);
   - **phase 2** with the probe launcher (``hydra.launcher`` updated by
     ``hydra.sweeper.probe_launcher``): the cells reading the wave's stores, which only
     read (no model is loaded), and the one-hot cells. Readers of a store whose shards did
     not all publish are not launched; they are reported failed with the shard's error.

Every Hydra launcher blocks until its batch has ended, so phase 2 starts after phase 1.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from ptransfer.embed.shards import SHARDS_SUFFIX, write_todo
from ptransfer.sweep.jobs import CellPlan, StorePlan, SweepPlan, TaskCache, plan_sweep, wave_size
from ptransfer.sweep.summary import NOT_LAUNCHED

log = logging.getLogger(__name__)


def launcher_config(config: DictConfig, updates: dict | None) -> DictConfig:
    """A copy of the run config whose ``hydra.launcher`` has ``updates`` applied (each key
    must be a setting of the launcher in use: a typo is an error naming it)."""
    copied = copy.deepcopy(config)
    known = set(copied.hydra.launcher.keys())
    with open_dict(copied):
        for key, value in (updates or {}).items():
            if key not in known:
                raise ValueError(f"hydra.sweeper: {key!r} is not a setting of the launcher "
                                 f"{copied.hydra.launcher.get('_target_')} (it has "
                                 f"{sorted(k for k in known if not k.startswith('_'))})")
            OmegaConf.update(copied, f"hydra.launcher.{key}", value, merge=True)
    return copied


def plan_for(config: DictConfig, loader, params: dict | None, arguments: list[str],
             each=None) -> SweepPlan:
    """The sweep's phase plan, composing through Hydra's config loader."""
    from ptransfer.sweep.expand import SweepExpander, group_checker, sweep_lists

    expander = SweepExpander(lambda o: loader.load_sweep_config(config, list(o)),
                             sweep_lists(params, arguments), group_checker(loader),
                             repository=getattr(loader, "repository", None))
    return plan_sweep(expander, TaskCache(), each=each)


def prepared_plan(config: DictConfig, loader, params: dict | None, arguments: list[str]
                  ) -> SweepPlan:
    """The plan after the sweep's weights are on disk and, under ``store.rebuild=true``, its
    stores deleted (``sweep.prepare.SweepPreparation``): planned again after either."""
    from ptransfer.sweep.prepare import SweepPreparation, command_id

    command = command_id(config.hydra.sweep.dir)
    preparation = SweepPreparation(command)
    plan = plan_for(config, loader, params, arguments, each=preparation)
    if preparation.fetch():  # the downloaded weights' content keys cells and stores
        preparation = SweepPreparation(command)
        plan = plan_for(config, loader, params, arguments, each=preparation)
    if preparation.rebuild():
        plan = plan_for(config, loader, params, arguments)
    return plan


def waves(plan: SweepPlan, config: DictConfig) -> list[list[str]]:
    """Store groups in the order of their first reader, in waves (see the module docstring)."""
    order: list[str] = []
    for cell in plan.phase2_cells():
        if cell.group and cell.group not in order:
            order.append(cell.group)
    retain = str((config.get("store") or {}).get("retain", "all"))
    size = wave_size(config) if retain == "until_done" else max(1, len(order))
    return [order[i: i + size] for i in range(0, len(order), size)] or [[]]


def shard_jobs(plan: SweepPlan, groups: list[str]) -> list[list[str]]:
    """Phase-1 job overrides for the shards of the stores of ``groups``."""
    stores = [s for s in plan.stores.values() if _group_of(plan, s) in groups]
    jobs = []
    for store in stores:
        for shard in store.shards:
            todo = write_todo(store.path, shard, store.spec)
            jobs.append([*store.overrides, f"extract.shard='{todo}'"])
    return jobs


def _group_of(plan: SweepPlan, store: StorePlan) -> str | None:
    return next((c.group for c in plan.cells if c.store == store.path and c.group), None)


def finalize_stores(plan: SweepPlan, groups: list[str], failures: list[dict]
                    ) -> dict[Path, dict]:
    """Write the index file of each store of the wave; returns store -> the failure that left
    it incomplete (a failed shard job's status, or the error finalizing it)."""
    from ptransfer.embed.store import EmbeddingStore

    problems: dict[Path, dict] = {}
    for store in plan.stores.values():
        if _group_of(plan, store) not in groups:
            continue
        try:
            opened = EmbeddingStore(store.path, store.identity, store.n_layers, store.dim,
                                    level=store.level, dtype=store.dtype)
            opened.finalize()
            missing = [s for shard in store.shards for s in shard.todo if s not in opened]
        except Exception as err:  # noqa: BLE001 - reported per reader; the sweep goes on
            problems[store.path] = {"error": f"{type(err).__name__}: {err}", "log": None}
            continue
        if missing:
            failed = next((f for f in failures if _failed_store(f) == store.path.absolute()),
                          None) or {}
            problems[store.path] = {
                "error": f"{failed.get('error', 'a phase-1 shard job did not finish')} "
                         f"(phase 1: {len(missing)} sequences of {store.path} not extracted)",
                "traceback": failed.get("traceback"), "log": failed.get("log")}
    return problems


def _failed_store(status: dict) -> Path | None:
    """The store of a failed shard job: named in its status, or by its input file's folder."""
    if status.get("store"):
        return Path(status["store"]).absolute()
    todo = Path(str(status.get("shard", "")).strip("'"))
    folder = todo.parent.absolute()
    if folder.name.endswith(SHARDS_SUFFIX):
        return folder.with_name(folder.name[: -len(SHARDS_SUFFIX)])
    return None


def not_launched(cell: CellPlan, problem: dict | None = None) -> dict[str, Any]:
    """The summary's record of a combination that got no job; a reader of a failed store
    also gets that failure in its own status.json (as if it had failed itself)."""
    if cell.excluded is not None:
        return {"state": "excluded", "cell_id": cell.cell_id, "reason": cell.excluded}
    if cell.done:
        return {"state": "skipped", "cell_id": cell.cell_id}
    from ptransfer.cell.status import write_status

    status = {"state": "failed", "cell_id": cell.cell_id, **(problem or {})}
    write_status(cell.cell_dir, **status)
    return status


def _failures(results: list) -> list[dict]:
    """The statuses of the phase-1 jobs of a batch that failed."""
    statuses = []
    for result in results:
        value = result.return_value
        if isinstance(value, dict) and value.get("state") == "failed":
            statuses.append(value)
    return statuses


def run_sweep(config: DictConfig, loader, params: dict | None, arguments: list[str],
              launch) -> list:
    """Plan and run the sweep; ``launch(phase, job overrides, first job index)`` runs one
    batch with that phase's launcher and returns its ``JobReturn`` list."""
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    plan = prepared_plan(config, loader, params, arguments)
    _write_readers(plan, config, sweep_dir)
    records = [not_launched(c) for c in plan.cells if not c.to_run]
    returns, index = [], 0
    for number, groups in enumerate(waves(plan, config)):
        first = number == 0
        phase1 = shard_jobs(plan, groups) + [c.overrides for c in plan.phase1_cells() if first]
        _log_wave(number, groups, plan, phase1)
        failures: list[dict] = []
        if phase1:
            returns.append(launch("extract", phase1, index))
            failures = _failures(returns[-1])
            index += len(phase1)
        problems = finalize_stores(plan, groups, failures)
        phase2 = []
        for cell in plan.phase2_cells():
            if (cell.group in groups) or (cell.group is None and first):
                if cell.store in problems:
                    records.append(not_launched(cell, problems[cell.store]))
                else:
                    phase2.append(cell.overrides)
        if phase2:
            returns.append(launch("probe", phase2, index))
            index += len(phase2)
    (sweep_dir / NOT_LAUNCHED).write_text(json.dumps(records, indent=1))
    return returns


def _write_readers(plan: SweepPlan, config: DictConfig, sweep_dir: Path) -> None:
    from ptransfer.sweep.retention import policy, write_reader_groups

    if policy(config) != "until_done":
        return
    groups: dict[str, list[str]] = {}
    for cell in plan.phase2_cells():
        if cell.group:
            groups.setdefault(cell.group, []).append(str(cell.cell_dir.absolute()))
    write_reader_groups(str(sweep_dir), Path(config.store_dir), groups)
    log.info("store.retain=until_done: %d stores, each deleted after its last reader",
             len(groups))


def _log_wave(number: int, groups: list[str], plan: SweepPlan, phase1: list) -> None:
    readers = sum(1 for c in plan.phase2_cells() if c.group in groups)
    log.info("wave %d: %d store group(s): phase 1 %d job(s), then phase 2 with %d store "
             "reader(s)", number + 1, len(groups), len(phase1), readers)
