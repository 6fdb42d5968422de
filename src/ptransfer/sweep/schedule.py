"""The order a sweep's jobs run in, and what that costs: priorities and a discrete-event model.

A sweep's jobs (``sweep.launch``) are shard extractions, streaming cells and probe cells; each
needs a slot of its kind (``gpu`` or ``cpu``) and may wait for others (a probe cell for the
shards of its store). The dispatcher starts a job as soon as its inputs are done and a slot
of its kind is free, **longest path first**: a job's priority is the time the sweep still
needs once it starts (its seconds plus the longest chain of jobs waiting for it), and the
inputs of one job share the most urgent of their priorities and run together, so a store's
shards finish together and its readers start early (``priorities``). Plain longest-first on
the GPU runs every store's long shards before any store's short one, and no store is
complete until the GPUs are nearly done (``docs/benchmarks.md``).

``simulate`` replays that policy on estimated durations (``ptransfer plan``'s makespan line,
``scripts/bench_schedule.py``); ``barriers`` replays the phase-by-phase schedule of ptransfer
0.2 for comparison; ``lower_bound`` is max(GPU work / GPUs, the longest dependency chain).
Plain Python, no I/O: the numbers in, the numbers out.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass

# A probe's cost when nothing better is known (the plan estimates no probe time): a ridge
# probe costs n d^2 + d^3 per layer (d <= n), at the rate scripts/bench_heads.py measured on
# one CPU thread (1.0 s a layer for n = 6,289 sequences, d = 1,280); logistic 10 x that.
RIDGE_SECONDS_PER_LAYER = 1.0
RIDGE_REFERENCE = 6289 * 1280**2 + 1280**3
LOGISTIC_FACTOR = 10.0


@dataclass(frozen=True)
class Job:
    """One job: its slot kind (``gpu`` | ``cpu``), estimated seconds, the jobs it waits for,
    and, for the phase-by-phase replay, its wave and phase."""

    name: str
    kind: str
    seconds: float
    deps: tuple[str, ...] = ()
    wave: int = 0
    phase: int = 1


def probe_seconds(head: str, n: int, dim: int, n_layers: int) -> float:
    """A probe cell's estimated seconds (the module's stated model)."""
    d = min(dim, max(n, 1))
    seconds = n_layers * RIDGE_SECONDS_PER_LAYER * (n * d * d + d**3) / RIDGE_REFERENCE
    return seconds * (LOGISTIC_FACTOR if head == "logistic" else 1.0)


def _dependents(jobs: list[Job]) -> dict[str, list[str]]:
    dependents = defaultdict(list)
    for job in jobs:
        for dep in job.deps:
            dependents[dep].append(job.name)
    return dependents


def remaining_path(jobs: list[Job]) -> dict[str, float]:
    """Each job's seconds plus the longest chain of jobs that wait for it: how long the sweep
    still runs after the job starts, at best."""
    dependents = _dependents(jobs)
    by_name = {job.name: job for job in jobs}
    path: dict[str, float] = {}
    for job in reversed(_topological(jobs)):
        path[job.name] = by_name[job.name].seconds + max(
            (path[later] for later in dependents[job.name]), default=0.0)
    return path


def _topological(jobs: list[Job]) -> list[Job]:
    """Jobs with every job before the jobs that wait for it (a cycle is an error)."""
    by_name = {job.name: job for job in jobs}
    state: dict[str, int] = {}
    order: list[Job] = []
    for root in jobs:
        stack = [(root.name, False)]
        while stack:
            name, leaving = stack.pop()
            if leaving:
                state[name] = 2
                order.append(by_name[name])
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise ValueError(f"job {name} waits for itself (a dependency cycle)")
            state[name] = 1
            stack.append((name, True))
            stack.extend((dep, False) for dep in by_name[name].deps if state.get(dep) != 2)
    return order


def priorities(jobs: list[Job]) -> dict[str, tuple]:
    """A sort key per job, most urgent first (see the module docstring)."""
    order = {job.name: i for i, job in enumerate(jobs)}
    path = remaining_path(jobs)
    urgency = dict(path)
    group = dict(order)
    for job in jobs:
        if job.deps:
            most = max(path[dep] for dep in job.deps)
            for dep in job.deps:
                urgency[dep] = max(urgency[dep], most)
                group[dep] = min(group[dep], order[job.name] + len(jobs))
    by_name = {job.name: job for job in jobs}
    return {name: (-urgency[name], group[name], -by_name[name].seconds, order[name])
            for name in order}


def simulate(jobs: list[Job], slots: dict[str, int]) -> tuple[float, dict[str, float]]:
    """(makespan, start of each job) of dependency-driven dispatch by ``priorities``."""
    by_name = {job.name: job for job in jobs}
    key = priorities(jobs)
    waiting = {job.name: set(job.deps) for job in jobs}
    dependents = _dependents(jobs)
    ready: dict[str, list] = {kind: [] for kind in slots}
    free = dict(slots)
    running: list = []
    starts: dict[str, float] = {}
    now = 0.0
    for job in jobs:
        if not job.deps:
            heapq.heappush(ready[job.kind], (key[job.name], job.name))
    while True:
        for kind, queue in ready.items():
            while free[kind] and queue:
                name = heapq.heappop(queue)[1]
                starts[name] = now
                free[kind] -= 1
                heapq.heappush(running, (now + by_name[name].seconds, key[name], name))
        if not running:
            break
        now, _, name = heapq.heappop(running)
        free[by_name[name].kind] += 1
        for later in dependents[name]:
            waiting[later].discard(name)
            if not waiting[later]:
                heapq.heappush(ready[by_name[later].kind], (key[later], later))
    if len(starts) != len(jobs):
        raise ValueError(f"{len(jobs) - len(starts)} jobs never ran (no slot of their kind)")
    return now, starts


def list_schedule(seconds: list[float], workers: int) -> float:
    """Independent jobs on ``workers``, each taking the next job of the list when free."""
    free = [0.0] * max(1, workers)
    for duration in seconds:
        start = heapq.heappop(free)
        heapq.heappush(free, start + duration)
    return max(free)


def barriers(jobs: list[Job], workers: int) -> float:
    """ptransfer 0.2's schedule: wave after wave, phase 1 then phase 2, each a batch on
    ``workers`` in list order that must end before the next batch starts."""
    spans = 0.0
    for wave in sorted({job.wave for job in jobs}):
        for phase in (1, 2):
            batch = [job.seconds for job in jobs if job.wave == wave and job.phase == phase]
            spans += list_schedule(batch, workers) if batch else 0.0
    return spans


def lower_bound(jobs: list[Job], gpus: int) -> tuple[float, float]:
    """(GPU work / gpus, the longest dependency chain): no schedule beats the larger."""
    gpu_work = sum(job.seconds for job in jobs if job.kind == "gpu") / max(1, gpus)
    path = remaining_path(jobs)
    return gpu_work, max(path.values(), default=0.0)


def duration_text(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``3.48 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


__all__ = ["Job", "barriers", "duration_text", "list_schedule", "lower_bound", "priorities", "probe_seconds",
           "remaining_path", "simulate"]
