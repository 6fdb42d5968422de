"""Discrete-event replay of a sweep's schedule: today's phase barriers against dependency-driven
dispatch, and the lower bound, from the plan's own duration estimates.

    python scripts/bench_schedule.py [--experiment paper_ablations] [--gpus 8] [--cpus 16]
        [--data ../shared/data] [--load-s 0] [--shard-minutes 30 10]

The jobs are those ``ptransfer run -m`` would launch for the experiment on an empty results
folder (``ptransfer plan``'s planning functions, ``sweep.plan.plan_cells``):

- **shard jobs** (GPU): one per planned shard of each store; seconds = the plan's estimate
  (2 x params x tokens at its 100 TFLOP/s, ``embed.shard_sizing.gpu_seconds``) plus
  ``--load-s`` (a model load per job; the plan does not count it);
- **streaming cells** (GPU): the plan's estimate of their forward passes (plus ``--load-s``);
- **probe cells** (CPU, or GPU for the ``linear`` head): after every shard of their store.
  The plan has no estimate of probe time, so this script states one: a ridge probe costs,
  per layer, ``n x d^2 + d^3`` (n sequences, d = min(dim, n)) at the rate measured by
  ``scripts/bench_heads.py`` (1.0 s a layer for n = 6,289, d = 1,280: docs/benchmarks.md),
  a logistic probe 10 times that; one-hot features are 21 x the mean length wide.

Schedules, for N GPU slots and M CPU slots:

- **today** (``sweep.launch``): per wave (all stores with ``store.retain=all``; waves of
  N store groups with ``until_done`` on the ``gpu_box`` launcher), phase 1 (shards, and the
  streaming cells in the first wave) on N workers in list order, a barrier, then phase 2 (the
  wave's probe cells; the one-hot cells in the first wave) on N workers (the launcher's
  ``n_jobs``; every PLM cell holds a GPU there), a barrier;
- **dependency-driven**: a job starts as soon as its inputs are done and a slot of its kind
  is free; GPU jobs longest first, counting the jobs that wait for them (the longest path
  a job starts: a 0.1-minute shard whose store's readers wait for it goes before a 9-minute
  shard nothing waits for; the inputs of one job, such as a store's shards, together), CPU
  jobs longest path first too;
- the **lower bound** max(GPU work / N, the longest dependency chain).

``--shard-minutes`` re-cuts every store by work (``extract.shard_max_gpu_minutes``, with
``extract.shard_max_gb`` 20) to show what the shard target does to the makespan.
The simulation itself (``Job``, ``dispatch``, ``barriers``, ``lower_bound``) is plain Python
with no ptransfer import, for the sweep's scheduler and ``plan``'s makespan line to reuse.
"""

from __future__ import annotations

import argparse
import heapq
import math
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RIDGE_SECONDS_PER_LAYER = 1.0  # scripts/bench_heads.py: n = 6,289, d = 1,280, one thread
RIDGE_REFERENCE = 6289 * 1280**2 + 1280**3
LOGISTIC_FACTOR = 10.0
ONEHOT_ALPHABET = 21


# ---------------------------------------------------------------- the simulation
@dataclass(frozen=True)
class Job:
    """One job: its slot kind (``gpu`` | ``cpu``), seconds, the jobs it waits for, and, for
    the barrier schedule, its wave and phase."""

    name: str
    kind: str
    seconds: float
    deps: tuple[str, ...] = ()
    wave: int = 0
    phase: int = 1


def remaining_path(jobs: list[Job]) -> dict[str, float]:
    """Each job's seconds plus the longest chain of jobs that wait for it: how long the
    sweep still runs after the job starts, at best (its "bottom level")."""
    dependents = defaultdict(list)
    for job in jobs:
        for dep in job.deps:
            dependents[dep].append(job.name)
    by_name = {job.name: job for job in jobs}
    path: dict[str, float] = {}

    def bottom(name: str) -> float:
        if name not in path:
            path[name] = by_name[name].seconds + max(map(bottom, dependents[name]),
                                                     default=0.0)
        return path[name]

    for job in jobs:
        bottom(job.name)
    return path


def dispatch(jobs: list[Job], slots: dict[str, int]) -> tuple[float, dict[str, float]]:
    """Dependency-driven: (makespan, start of each job). A job is ready when its deps are
    done; a free slot of its kind takes the ready job first in its queue: longest first,
    by the longest path the job starts (``remaining_path``: a short shard that a long probe
    waits for goes before a long shard nothing waits for); on GPUs the inputs of one job (a
    store's shards) share the urgency of the most urgent of them and run together."""
    order = {job.name: i for i, job in enumerate(jobs)}
    by_name = {job.name: job for job in jobs}
    waiting = {job.name: set(job.deps) for job in jobs}
    dependents = defaultdict(list)
    for job in jobs:
        for dep in job.deps:
            dependents[dep].append(job.name)
    path = remaining_path(jobs)
    # A job's dependents wait for all their inputs: each input gets the priority of the
    # most urgent of them, and the inputs of one dependent stay together (a store's shards
    # run back to back, so the store is complete, and its readers start, early).
    urgency = {job.name: path[job.name] for job in jobs}
    group = {job.name: order[job.name] for job in jobs}
    for job in jobs:
        if job.deps:
            most = max(path[dep] for dep in job.deps)
            for dep in job.deps:
                urgency[dep] = max(urgency[dep], most)
                group[dep] = min(group[dep], order[job.name] + len(jobs))
    ready: dict[str, list] = {kind: [] for kind in slots}
    free = dict(slots)
    running: list = []
    starts: dict[str, float] = {}
    now = 0.0

    def make_ready(name: str) -> None:
        job = by_name[name]
        key = ((-urgency[name], group[name], -job.seconds, order[name]) if job.kind == "gpu"
               else (-path[name], order[name]))
        heapq.heappush(ready[job.kind], (*key, name))

    for job in jobs:
        if not job.deps:
            make_ready(job.name)
    while True:
        for kind, queue in ready.items():
            while free[kind] and queue:
                name = heapq.heappop(queue)[-1]
                starts[name] = now
                free[kind] -= 1
                heapq.heappush(running, (now + by_name[name].seconds, order[name], name))
        if not running:
            break
        now, _, name = heapq.heappop(running)
        free[by_name[name].kind] += 1
        for later in dependents[name]:
            waiting[later].discard(name)
            if not waiting[later]:
                make_ready(later)
    if len(starts) != len(jobs):
        raise ValueError(f"{len(jobs) - len(starts)} jobs never ran (a dependency cycle, or "
                         "a kind without slots)")
    return now, starts


def list_schedule(seconds: list[float], workers: int) -> float:
    """Independent jobs on ``workers``, each taking the next job of the list when free."""
    free = [0.0] * max(1, workers)
    for duration in seconds:
        start = heapq.heappop(free)
        heapq.heappush(free, start + duration)
    return max(free)


def barriers(jobs: list[Job], workers: int) -> float:
    """Today's schedule: wave after wave, phase 1 then phase 2, each a batch on ``workers``
    in list order that must end before the next batch starts."""
    spans = 0.0
    for wave in sorted({job.wave for job in jobs}):
        for phase in (1, 2):
            batch = [job.seconds for job in jobs if job.wave == wave and job.phase == phase]
            spans += list_schedule(batch, workers) if batch else 0.0
    return spans


def lower_bound(jobs: list[Job], gpus: int) -> tuple[float, float]:
    """(GPU work / gpus, the longest dependency chain): no schedule beats the larger."""
    gpu_work = sum(job.seconds for job in jobs if job.kind == "gpu") / gpus
    by_name = {job.name: job for job in jobs}
    longest: dict[str, float] = {}

    def chain(name: str) -> float:
        if name not in longest:
            job = by_name[name]
            longest[name] = job.seconds + max((chain(dep) for dep in job.deps), default=0.0)
        return longest[name]

    return gpu_work, max((chain(job.name) for job in jobs), default=0.0)


# ---------------------------------------------------------------- the plan's jobs
def probe_seconds(head: str, n: int, dim: int, n_layers: int) -> float:
    """The stated probe model (module docstring): ridge per layer n d^2 + d^3, d <= n."""
    d = min(dim, max(n, 1))
    seconds = n_layers * RIDGE_SECONDS_PER_LAYER * (n * d * d + d**3) / RIDGE_REFERENCE
    return seconds * (LOGISTIC_FACTOR if head == "logistic" else 1.0)


def store_shards(store, minutes: float | None) -> list[float]:
    """Tokens of each shard job of a store: the plan's, or re-cut to ``minutes`` a shard."""
    from ptransfer.embed.shard_sizing import ShardSizing, StoreWork
    from ptransfer.embed.shards import plan_shards

    if minutes is None:
        return [s.tokens for s in store.shards] + list(store.estimated_shards())
    work = StoreWork(store.n_params, store.level, store.n_layers, store.dim, store.dtype)
    limits = ShardSizing(max_gpu_minutes=minutes).limits(work)
    tokens = [s.tokens for s in plan_shards(store.path, store.requested, store.published,
                                            limits, store.batching)]
    estimated = sum(n * (length + 2) for n, length in store.estimated.values())
    rows = sum(n * (length if store.level == "residue" else 1)
               for n, length in store.estimated.values())
    count = max(math.ceil(estimated / limits.max_tokens) if limits.max_tokens else 1,
                math.ceil(rows / limits.max_rows) if limits.max_rows else 1)
    return tokens + ([estimated / count] * count if estimated else [])


def plan_jobs(sweep, gpus: int, load_s: float, minutes: float | None) -> list[Job]:
    """The sweep's jobs (shards, streaming cells, probe cells) with waves for today's
    ``until_done`` schedule (``gpus`` store groups a wave, in order of first reader)."""
    from ptransfer.embed.shard_sizing import gpu_seconds
    from ptransfer.sweep.jobs import cell_extraction

    groups: list[str] = []
    for cell in sweep.phase2_cells():
        if cell.group and cell.group not in groups:
            groups.append(cell.group)
    wave_of = {group: i // gpus for i, group in enumerate(groups)}
    jobs, shards_of = [], {}
    for number, store in enumerate(sweep.stores.values()):
        group = next((c.group for c in sweep.cells if c.store == store.path and c.group), None)
        names = []
        for k, tokens in enumerate(store_shards(store, minutes)):
            names.append(f"store{number}-shard{k}")
            jobs.append(Job(names[-1], "gpu", gpu_seconds(store.n_params, tokens) + load_s,
                            wave=wave_of.get(group, 0), phase=1))
        shards_of[store.path] = tuple(names)
    for cell in sweep.phase1_cells():  # streaming cells: they run a model as they fit
        jobs.append(Job(cell.cell_id, "gpu", cell_extraction(cell, sweep.stores)[1] + load_s))
    for cell in sweep.phase2_cells():
        n, length = cell.task.size() if cell.task else _task_size(cell)
        if cell.store is None:  # one-hot: one layer, 21 x length wide (flattened)
            dim, n_layers = int(ONEHOT_ALPHABET * length), 1
        else:
            store = sweep.stores[cell.store]
            dim, n_layers = store.dim, store.n_layers
        kind = "gpu" if cell.head == "linear" else "cpu"
        jobs.append(Job(cell.cell_id, kind, probe_seconds(cell.head, n, dim, n_layers),
                        shards_of.get(cell.store, ()), wave=wave_of.get(cell.group, 0),
                        phase=2))
    return jobs


def _task_size(cell) -> tuple[int, float]:
    from ptransfer.sweep.jobs import PLANNING_SIZES

    return PLANNING_SIZES.get(cell.dataset, (0, 0.0))


def report(label: str, jobs: list[Job], gpus: int, cpus: int) -> None:
    gpu_bound, chain = lower_bound(jobs, gpus)
    bound = max(gpu_bound, chain)
    retain_all = [Job(j.name, j.kind, j.seconds, j.deps, 0, j.phase) for j in jobs]
    rows = [("today, store.retain=all (phase 1 | barrier | phase 2)", barriers(retain_all, gpus)),
            (f"today, store.retain=until_done (waves of {gpus} stores)", barriers(jobs, gpus)),
            ("dependency-driven, longest path first", dispatch(jobs, {"gpu": gpus,
                                                                     "cpu": cpus})[0])]
    shards = [j for j in jobs if "-shard" in j.name]
    gpu_work = sum(j.seconds for j in jobs if j.kind == "gpu") / 60
    cpu_work = sum(j.seconds for j in jobs if j.kind == "cpu") / 60
    print(f"{label}: {len(shards)} shard jobs, GPU work {gpu_work:.1f} GPU-min, CPU work "
          f"{cpu_work:.1f} CPU-min (/ {cpus} slots = {cpu_work / cpus:.1f} min)")
    print(f"  lower bound: max(GPU work / {gpus} = {gpu_bound / 60:.1f} min, longest chain = "
          f"{chain / 60:.1f} min) = {bound / 60:.1f} min")
    for name, makespan in rows:
        print(f"  {name}: {makespan / 60:.1f} min ({makespan / bound:.2f} x the bound)")
    _, starts = dispatch(jobs, {"gpu": gpus, "cpu": cpus})
    onehot = [starts[j.name] + j.seconds for j in jobs if j.phase == 2 and not j.deps]
    if onehot and shards:
        print(f"  dependency-driven: first one-hot cell done at {min(onehot) / 60:.1f} min, "
              f"last shard starts at {max(starts[j.name] for j in shards) / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="paper_ablations")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=16)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--load-s", type=float, default=0.0,
                        help="seconds added to every GPU job (a model load; default 0: the "
                             "plan's estimates as they are)")
    parser.add_argument("--shard-minutes", type=float, nargs="*", default=[30.0, 5.0],
                        help="also re-cut the stores by work at these GPU-minutes a shard")
    args = parser.parse_args()
    from ptransfer.sweep.plan import plan_cells

    with tempfile.TemporaryDirectory() as results:
        cells = plan_cells(REPO / "conf", [f"+experiment={args.experiment}",
                                           f"data.root={args.data}", f"results_dir={results}"])
    sweep = cells.sweep
    print(f"{args.experiment}: {sum(c.to_run for c in sweep.cells)} cells to run, "
          f"{len(sweep.stores)} stores, {len(sweep.phase1_cells())} streaming cells, "
          f"{len(sweep.phase2_cells())} probe cells; {args.gpus} GPUs + {args.cpus} CPU slots")
    report("the plan's shards", plan_jobs(sweep, args.gpus, args.load_s, None), args.gpus,
           args.cpus)
    for minutes in args.shard_minutes:
        report(f"shards re-cut to <= {minutes:g} GPU-min", plan_jobs(
            sweep, args.gpus, args.load_s, minutes), args.gpus, args.cpus)


if __name__ == "__main__":
    main()
