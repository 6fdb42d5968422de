"""Dependency-driven dispatch: each job starts when its inputs are done and a slot is free.

The launching process (the sweeper, ``sweep.launch``) runs the loop: jobs (``sweep.queue``)
wait for their inputs (a probe cell for its store's shard jobs), the ready ones queue per
slot kind (``gpu`` | ``cpu``) in the order of ``sweep.schedule.priorities`` (longest path
first), and a free slot takes the first; when a job ends its slot is free again and the jobs
waiting for it may become ready. No phase barrier: probe cells run beside extraction, and
one-hot cells (no input) start at once. ``store.retain=until_done`` bounds the store groups
whose jobs may be under way at once (a group closes when its last job ends).

How a job runs depends on the launcher (``runner_for``), always through Hydra's own job
machinery (the job's output folder, its logging, ``job_status.json``):

- basic launcher: one job at a time in this process, in priority order;
- joblib (``hydra/launcher=joblib``, ``gpu_box``): a pool of worker processes, one per slot
  (GPU slots: the extraction launcher's ``n_jobs``; CPU slots: the probe launcher's);
- submitit (``slurm``, ``submitit_local``): **the launching process dispatches as jobs
  finish**: each job is submitted by itself, with its kind's launcher settings
  (``hydra.launcher`` updated by ``hydra.sweeper.extract_launcher`` for GPU jobs,
  ``probe_launcher`` for CPU jobs), at most ``array_parallelism`` of a kind at once, and the
  next is submitted when one ends. We chose this over job arrays with Slurm dependencies:
  a dependency (``afterok``) cannot say "run the readers of a store whose shard failed as
  failed, with that shard's error", job arrays fix their order at submission (no longest
  path first once work finishes early), and the same loop then serves every launcher. The
  cost is that the launching process must live as long as the sweep, as it already had to.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from ptransfer.sweep.queue import QueuedJob
from ptransfer.sweep.schedule import priorities

log = logging.getLogger(__name__)


class Dispatcher:
    """Runs ``QueuedJob`` s on ``slots`` (``{"gpu": G, "cpu": C}``) through ``submit(job,
    index) -> Future``. ``check(job)`` is asked when a job's inputs are done: a problem (a
    dict) means the job is not launched (``skipped`` records it). ``on_result(job, result)``
    sees each result. ``max_groups``: store groups under way at once (None: no limit)."""

    def __init__(self, submit: Callable[[QueuedJob, int], Future], slots: dict[str, int],
                 check: Callable[[QueuedJob], dict | None] = lambda job: None,
                 on_result: Callable[[QueuedJob, Any], None] = lambda job, result: None,
                 max_groups: int | None = None) -> None:
        self.submit, self.slots, self.check, self.on_result = submit, slots, check, on_result
        self.max_groups = max_groups
        self.results: list = []
        self.skipped: list[tuple[QueuedJob, dict]] = []
        self.started: list[str] = []  # names, in the order they started (for tests and logs)

    def run(self, jobs: list[QueuedJob]) -> list:
        """Run every job (see the class docstring); returns the results in end order."""
        key = priorities([job.job for job in jobs])
        by_name, waiting, dependents, left = _graph(jobs)
        self._open: set[str] = set()
        ready: dict[str, list] = {kind: [] for kind in self.slots}
        free = dict(self.slots)
        running: dict[Future, QueuedJob] = {}

        def ended(name: str) -> None:
            job = by_name[name]
            if job.group:
                left[job.group] -= 1
                if not left[job.group]:
                    self._open.discard(job.group)
            for later in dependents[name]:
                waiting[later].discard(name)
                if not waiting[later]:
                    arrive(later)

        def arrive(name: str) -> None:
            problem = self.check(by_name[name])
            if problem is not None:
                self.skipped.append((by_name[name], problem))
                ended(name)
                return
            heapq.heappush(ready[by_name[name].job.kind], (key[name], name))

        for job in jobs:
            if not job.job.deps:
                arrive(job.name)
        while True:
            for kind, queue in ready.items():
                while free[kind] and queue:
                    job = self._next(queue, by_name)
                    if job is None:
                        break
                    free[kind] -= 1
                    running[self.submit(job, len(self.started))] = job
                    self.started.append(job.name)
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                free[job.job.kind] += 1
                result = future.result()
                self.results.append(result)
                self.on_result(job, result)
                ended(job.name)
        stuck = [name for kind in ready.values() for _, name in kind]
        if stuck:
            raise RuntimeError(f"{len(stuck)} jobs could not start (first: {stuck[0]})")
        return self.results

    def _next(self, queue: list, by_name: dict[str, QueuedJob]) -> QueuedJob | None:
        """The most urgent ready job whose store group may be under way now."""
        held = []
        chosen = None
        while queue:
            item = heapq.heappop(queue)
            job = by_name[item[1]]
            group = job.group
            if (not group or group in self._open or self.max_groups is None
                    or len(self._open) < self.max_groups):
                if group:
                    self._open.add(group)
                chosen = job
                break
            held.append(item)
        for item in held:
            heapq.heappush(queue, item)
        return chosen


def _graph(jobs: list[QueuedJob]) -> tuple[dict, dict, dict, dict]:
    """(job by name, the inputs each waits for, the jobs waiting for each, the jobs of each
    store group)."""
    by_name = {job.name: job for job in jobs}
    waiting = {job.name: set(job.job.deps) for job in jobs}
    dependents: dict[str, list[str]] = {job.name: [] for job in jobs}
    left: dict[str, int] = {}
    for job in jobs:
        for dep in job.job.deps:
            dependents[dep].append(job.name)
        if job.group:
            left[job.group] = left.get(job.group, 0) + 1
    return by_name, waiting, dependents, left


# ---------------------------------------------------------------- how a job runs
class SerialRunner:
    """The basic launcher: each job in this process, when submitted (one at a time)."""

    def __init__(self, launcher) -> None:
        self.launcher = launcher

    def __call__(self, job: QueuedJob, index: int) -> Future:
        future: Future = Future()
        try:
            future.set_result(self.launcher.launch([job.overrides + job.extra], index)[0])
        except BaseException as err:  # noqa: BLE001 - raised again by the dispatcher
            future.set_exception(err)
        return future

    def close(self, failed: bool = False) -> None:
        return None


class PoolRunner:
    """The joblib launcher's way of running a job (Hydra's ``execute_job`` in a worker
    process), on a pool of ``workers`` processes owned by this sweep."""

    def __init__(self, context, workers: int) -> None:
        from hydra.core.singleton import Singleton
        from joblib.externals.loky import ProcessPoolExecutor

        self.context = context
        self.state = Singleton.get_state()
        self.pool = ProcessPoolExecutor(max_workers=max(1, workers))

    def __call__(self, job: QueuedJob, index: int) -> Future:
        from hydra_plugins.hydra_joblib_launcher._core import execute_job

        return self.pool.submit(execute_job, index, job.overrides + job.extra,
                                self.context.hydra_context, self.context.config,
                                self.context.task_function, self.state)

    def close(self, failed: bool = False) -> None:
        """Wait for the pool's workers to end; after an error (Ctrl-C), stop them at once."""
        self.pool.shutdown(wait=not failed, kill_workers=failed)


class ThreadRunner:
    """submitit: each job submitted by itself with its kind's launcher, from a thread that
    waits for it (at most ``workers`` at once)."""

    def __init__(self, context, workers: int) -> None:
        self.context = context
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers))
        self.lock = threading.Lock()  # launchers are built once per kind

    def __call__(self, job: QueuedJob, index: int) -> Future:
        with self.lock:
            launcher = self.context.launcher("extract" if job.job.kind == "gpu" else "probe")
        return self.pool.submit(lambda: launcher.launch([job.overrides + job.extra], index)[0])

    def close(self, failed: bool = False) -> None:
        self.pool.shutdown(wait=not failed, cancel_futures=failed)


def slots_for(context) -> tuple[dict[str, int], str]:
    """({"gpu": G, "cpu": C}, runner kind) for the sweep's launchers (module docstring)."""
    return slot_counts(dict(context.launcher_settings("extract")),
                       dict(context.launcher_settings("probe")))


def slot_counts(extract: dict, probe: dict) -> tuple[dict[str, int], str]:
    """Slots per kind and the runner, from the GPU jobs' and the CPU jobs' launcher settings
    (``hydra.launcher`` as each kind gets it)."""
    from ptransfer.sweep.jobs import launcher_parallelism

    target = str(extract.get("_target_", ""))
    if "joblib" in target:
        return {"gpu": launcher_parallelism(extract),
                "cpu": launcher_parallelism(probe)}, "pool"
    if "SlurmLauncher" in target:
        return {"gpu": launcher_parallelism(extract),
                "cpu": launcher_parallelism(probe)}, "threads"
    if "LocalLauncher" in target:
        from ptransfer.sweep.devices import gpu_pool

        return {"gpu": max(1, len(gpu_pool()[0])), "cpu": os.cpu_count() or 1}, "threads"
    return {"gpu": 1, "cpu": 1}, "serial"


def runner_for(context, slots: dict[str, int], kind: str):
    if kind == "pool":
        return PoolRunner(context, sum(slots.values()))
    if kind == "threads":
        return ThreadRunner(context, sum(slots.values()))
    return SerialRunner(context.launcher("extract"))


__all__ = ["Dispatcher", "PoolRunner", "SerialRunner", "ThreadRunner", "runner_for",
           "slot_counts", "slots_for"]
