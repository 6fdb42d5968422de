"""Running a multirun, for every launcher (the sweeper's work, Hydra-free): plan it once, then
dispatch its jobs as soon as each can run.

The sweeper (``hydra_plugins/ptransfer_sweeper``, the default ``hydra/sweeper``) hands its
launch step to ``run_sweep``:

1. Plan (``sweep.jobs.plan_sweep``, as ``ptransfer plan`` does), once: which combinations
   are cells of the design, which are done, which stores their readers need, and those
   stores' shards with work left (planned again only when weights had to be downloaded:
   their content keys cells and stores; ``store.rebuild=true`` re-plans the stores' shards
   alone). Excluded and done combinations get no job at all (they are recorded in
   ``<sweep dir>/not_launched.json`` for the summary).
2. Dispatch (``sweep.dispatch``) the sweep's jobs (``sweep.queue``): a shard job per
   shard of each store and the streaming cells on GPU slots, the probe cells on CPU slots
   as soon as their store's shard jobs have ended, one-hot cells at once; longest path
   first (``sweep.schedule``). When a probe cell's inputs are done, its store's index file
   is written (``embed.store_index``, once per store); readers of a store whose shards did
   not all publish are not launched: they are reported failed with the shard's error.
   With ``store.retain=until_done`` at most ``sweep.jobs.wave_size`` store groups are
   under way at once (a group's last reader deletes its stores: ``sweep.retention``).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from ptransfer.sweep.jobs import (
    CellPlan,
    StorePlan,
    SweepPlan,
    TaskCache,
    plan_sweep,
    replan_stores,
    wave_size,
)
from ptransfer.sweep.queue import QueuedJob, queued_jobs
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


def launcher_settings(config: DictConfig, kind: str) -> dict:
    """``hydra.launcher`` (plain values) as the jobs of ``kind`` get it: updated by
    ``hydra.sweeper.extract_launcher`` (GPU jobs) or ``probe_launcher`` (CPU jobs)."""
    sweeper = config.hydra.get("sweeper") or {}
    node = sweeper.get("extract_launcher" if kind in ("extract", "gpu") else "probe_launcher")
    updates = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    launcher = launcher_config(config, updates).hydra.launcher
    return OmegaConf.to_container(launcher, resolve=True)


def plan_for(config: DictConfig, loader, params: dict | None, arguments: list[str],
             each=None) -> SweepPlan:
    """The sweep's plan, composing through Hydra's config loader."""
    from ptransfer.sweep.expand import SweepExpander, group_checker, sweep_lists

    expander = SweepExpander(lambda o: loader.load_sweep_config(config, list(o)),
                             sweep_lists(params, arguments), group_checker(loader),
                             repository=getattr(loader, "repository", None))
    return plan_sweep(expander, TaskCache(), each=each)


def prepared_plan(config: DictConfig, loader, params: dict | None, arguments: list[str]
                  ) -> SweepPlan:
    """The plan after the sweep's weights are on disk and, under ``store.rebuild=true``, its
    stores deleted (``sweep.prepare.SweepPreparation``). Planned once; again only when
    weights were downloaded (their content keys cells and stores); after a rebuild only the
    stores' shards are planned again."""
    from ptransfer.sweep.prepare import SweepPreparation, command_id

    command = command_id(config.hydra.sweep.dir)
    preparation = SweepPreparation(command)
    plan = plan_for(config, loader, params, arguments, each=preparation)
    if preparation.fetch():
        preparation = SweepPreparation(command)
        plan = plan_for(config, loader, params, arguments, each=preparation)
    if preparation.rebuild():
        replan_stores(plan)
    return plan


class StoreGate:
    """The stores of a running sweep: each finalized once, when its first reader may start
    (its shard jobs have ended), and the problem that keeps its readers from starting."""

    def __init__(self, plan: SweepPlan) -> None:
        self.plan = plan
        self.failures: dict[Path, list[dict]] = {}
        self.problems: dict[Path, dict | None] = {}

    def record(self, job: QueuedJob, result) -> None:
        """A shard job's failure, kept for the readers of its store."""
        value = job_value(result)
        if job.cell is None and isinstance(value, dict) and value.get("state") == "failed":
            self.failures.setdefault(job.store, []).append(value)

    def check(self, job: QueuedJob) -> dict | None:
        """None when ``job`` may start; otherwise its not-launched record (a failed reader)."""
        if job.cell is None or job.store is None:
            return None
        if job.store not in self.problems:
            self.problems[job.store] = self._finalize(self.plan.stores[job.store])
        problem = self.problems[job.store]
        return None if problem is None else not_launched(job.cell, problem)

    def _finalize(self, store: StorePlan) -> dict | None:
        from ptransfer.embed.store import EmbeddingStore

        try:
            opened = EmbeddingStore(store.path, store.identity, store.n_layers, store.dim,
                                    level=store.level, dtype=store.dtype)
            opened.finalize()
            missing = [s for shard in store.shards for s in shard.todo if s not in opened]
        except Exception as err:  # noqa: BLE001 - reported per reader; the sweep goes on
            return {"error": f"{type(err).__name__}: {err}", "log": None}
        if not missing:
            return None
        failed = (self.failures.get(store.path) or [{}])[0]
        return {"error": f"{failed.get('error', 'a shard job did not finish')} "
                         f"(extraction: {len(missing)} sequences of {store.path} missing)",
                "traceback": failed.get("traceback"), "log": failed.get("log")}


def job_value(result) -> Any:
    """A Hydra ``JobReturn``'s value; None when the job raised (its error is raised again
    by the sweeper at the end, as Hydra's own sweepers do)."""
    try:
        return result.return_value
    except Exception:  # noqa: BLE001 - the job's own exception, re-raised later
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


def run_sweep(config: DictConfig, loader, params: dict | None, arguments: list[str],
              context) -> list:
    """Plan and run the sweep. ``context``: the sweeper (``hydra_context``,
    ``task_function``, ``config``, ``launcher(kind)``, ``launcher_settings(kind)``)."""
    from ptransfer.sweep.dispatch import Dispatcher, runner_for, slots_for
    from ptransfer.sweep.retention import policy

    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    plan = prepared_plan(config, loader, params, arguments)
    _write_readers(plan, config, sweep_dir)
    records = [not_launched(c) for c in plan.cells if not c.to_run]
    jobs = queued_jobs(plan)
    if str(config.extract.get("device", "auto")) == "auto":
        for job in jobs:  # a CPU job must not take one of the host's GPU slots
            if job.cell is not None and job.job.kind == "cpu":
                job.extra.append("extract.device=cpu")
    slots, kind = slots_for(context)
    _log_dispatch(plan, jobs, slots, context)
    gate = StoreGate(plan)
    groups = wave_size(config) if policy(config) == "until_done" else None
    runner = runner_for(context, slots, kind)
    dispatcher = Dispatcher(runner, slots, gate.check, gate.record, groups)
    try:
        returns = dispatcher.run(jobs)
    except BaseException:
        runner.close(failed=True)  # Ctrl-C, or a job that raised: no wait for the others
        raise
    runner.close()
    records += [record for _, record in dispatcher.skipped]
    (sweep_dir / NOT_LAUNCHED).write_text(json.dumps(records, indent=1))
    return returns


def _log_dispatch(plan: SweepPlan, jobs: list, slots: dict[str, int], context) -> None:
    from ptransfer.sweep.schedule import duration_text, lower_bound, simulate

    schedule = [job.job for job in jobs]
    makespan = simulate(schedule, slots)[0] if schedule else 0.0
    gpu_bound, chain = lower_bound(schedule, slots["gpu"])
    counts = {kind: sum(job.job.kind == kind for job in jobs) for kind in ("gpu", "cpu")}
    log.info("dispatch: %d GPU job(s) on %d GPU slot(s), %d CPU job(s) on %d CPU slot(s); "
             "estimated makespan %s (lower bound %s)", counts["gpu"], slots["gpu"],
             counts["cpu"], slots["cpu"], duration_text(makespan),
             duration_text(max(gpu_bound, chain)))
    for line in time_limit_lines(plan, context):
        log.warning(line)


def time_limit_lines(plan: SweepPlan, context) -> list[str]:
    """A warning per shard estimated over the GPU launcher's ``timeout_min``."""
    from ptransfer.embed.shard_sizing import StoreWork, over_time_limit

    limit = context.launcher_settings("extract").get("timeout_min")
    if not limit:
        return []
    return [line for store in plan.stores.values() for line in over_time_limit(
        store.shards, StoreWork(store.n_params, store.level, store.n_layers, store.dim,
                                store.dtype), float(limit), "hydra.launcher.timeout_min",
        store.path.name)]


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
