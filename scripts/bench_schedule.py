"""Discrete-event replay of a sweep's schedule: ptransfer 0.2's phase barriers against the
dependency-driven dispatch of ``ptransfer run -m``, and the lower bound, from the plan's own
duration estimates.

    python scripts/bench_schedule.py [--experiment paper_ablations] [--gpus 8] [--cpus 16]
        [--data ../shared/data] [--load-s 0] [--shard-minutes 10 5]

The jobs are those ``ptransfer run -m`` dispatches for the experiment on an empty results
folder, built by the sweep's own code (``sweep.queue.queued_jobs`` over
``sweep.plan.plan_cells``, as ``ptransfer plan`` counts them):

- **shard jobs** (GPU): one per planned shard of each store (sized by work:
  ``extract.shard_max_gpu_minutes`` 30, ``extract.shard_max_gb`` 20); seconds = the plan's
  estimate (2 x params x tokens at 100 TFLOP/s) plus ``--load-s`` (a model load per job;
  the plan does not count it); shards of tasks not downloaded come from planning sizes;
- **streaming cells** (GPU): the plan's estimate of their forward passes (plus ``--load-s``);
- **probe cells** (CPU; GPU for ``head=linear``): after every shard of their store, by the
  probe model of ``sweep.schedule.probe_seconds`` (the plan has no probe estimate: ridge per
  layer ``n d^2 + d^3`` at the rate ``scripts/bench_heads.py`` measured, logistic 10 x that).

Schedules, for N GPU slots and M CPU slots:

- **0.2's barriers**: per wave (all stores with ``store.retain=all``; waves of N store
  groups with ``until_done``), phase 1 (shards, and the streaming cells in the first wave) on
  N workers in list order, a barrier, then phase 2 (the wave's probe cells, the one-hot cells
  in the first wave) on N workers (``gpu_box``'s ``n_jobs``), a barrier;
- **dependency-driven** (``sweep.schedule.simulate``, the order ``sweep.dispatch`` runs):
  a job starts as soon as its inputs are done and a slot of its kind is free, longest path
  first;
- the **lower bound** max(GPU work / N, the longest dependency chain).

``--shard-minutes`` re-cuts every store at those GPU-minutes a shard to show what the shard
target does to the makespan.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ptransfer.sweep.schedule import Job, barriers, lower_bound, simulate

REPO = Path(__file__).resolve().parents[1]


def recut(sweep, minutes: float) -> None:
    """Every store's shards planned again at ``minutes`` of GPU time a shard at most."""
    from ptransfer.embed.shard_sizing import ShardSizing, StoreWork

    for store in sweep.stores.values():
        store.limits = ShardSizing(max_gpu_minutes=minutes).limits(
            StoreWork(store.n_params, store.level, store.n_layers, store.dim, store.dtype))
        store.plan()


def plan_jobs(sweep, gpus: int, load_s: float) -> list[Job]:
    """The jobs ``ptransfer run -m`` dispatches (``sweep.queue``, as ``plan`` counts them),
    ``load_s`` added to GPU jobs, with the waves and phases of the barrier schedule
    (``gpus`` store groups a wave, in order of first reader)."""
    from ptransfer.sweep.queue import queued_jobs

    groups: list[str] = []
    for cell in sweep.phase2_cells():
        if cell.group and cell.group not in groups:
            groups.append(cell.group)
    wave_of = {group: i // gpus for i, group in enumerate(groups)}
    jobs = []
    for queued in queued_jobs(sweep, for_run=False):
        job = queued.job
        phase = 2 if queued.cell is not None and queued.cell.phase == 2 else 1
        jobs.append(Job(job.name, job.kind, job.seconds + (load_s if job.kind == "gpu"
                                                            and phase == 1 else 0.0),
                        job.deps, wave_of.get(queued.group, 0), phase))
    return jobs


def report(label: str, jobs: list[Job], gpus: int, cpus: int) -> None:
    gpu_bound, chain = lower_bound(jobs, gpus)
    bound = max(gpu_bound, chain)
    retain_all = [Job(j.name, j.kind, j.seconds, j.deps, 0, j.phase) for j in jobs]
    rows = [("0.2, store.retain=all (phase 1 | barrier | phase 2)", barriers(retain_all, gpus)),
            (f"0.2, store.retain=until_done (waves of {gpus} stores)", barriers(jobs, gpus)),
            ("dependency-driven, longest path first", simulate(jobs, {"gpu": gpus,
                                                                     "cpu": cpus})[0])]
    shards = [j for j in jobs if "shard" in j.name.split(" of ")[0]]
    gpu_work = sum(j.seconds for j in jobs if j.kind == "gpu") / 60
    cpu_work = sum(j.seconds for j in jobs if j.kind == "cpu") / 60
    print(f"{label}: {len(shards)} shard jobs, GPU work {gpu_work:.1f} GPU-min, CPU work "
          f"{cpu_work:.1f} CPU-min (/ {cpus} slots = {cpu_work / cpus:.1f} min)")
    print(f"  lower bound: max(GPU work / {gpus} = {gpu_bound / 60:.1f} min, longest chain = "
          f"{chain / 60:.1f} min) = {bound / 60:.1f} min")
    for name, makespan in rows:
        print(f"  {name}: {makespan / 60:.1f} min ({makespan / bound:.2f} x the bound)")
    _, starts = simulate(jobs, {"gpu": gpus, "cpu": cpus})
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
    parser.add_argument("--shard-minutes", type=float, nargs="*", default=[10.0, 5.0],
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
    report("the plan's shards (extract.shard_max_gpu_minutes=30, shard_max_gb=20)",
           plan_jobs(sweep, args.gpus, args.load_s), args.gpus, args.cpus)
    for minutes in args.shard_minutes:
        recut(sweep, minutes)
        report(f"shards re-cut to <= {minutes:g} GPU-min", plan_jobs(
            sweep, args.gpus, args.load_s), args.gpus, args.cpus)


if __name__ == "__main__":
    main()
