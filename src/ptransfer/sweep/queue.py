"""A planned sweep as the jobs the dispatcher runs: kind, inputs and estimated seconds of each.

From the plan (``sweep.jobs.plan_sweep``):

- a **shard job** (``gpu``) per planned shard of each store: the reading cell's overrides
  plus ``extract.shard=<todo file>``; estimated at the plan's GPU rate (tokens x the model's
  cost: ``embed.shard_sizing.gpu_seconds``);
- a **streaming cell** (``gpu``): it runs its model as it fits; estimated likewise;
- a **probe cell** (``cpu``; ``gpu`` for the ``linear`` head, a torch probe): after every
  shard job of its store, estimated by ``sweep.schedule.probe_seconds``. A ``cpu`` cell is
  run with ``extract.device=cpu`` (when the device is ``auto``), so it never takes one of the
  host's GPU slots that the shard jobs use; a one-hot cell needs nothing and starts at once.

``ptransfer plan`` uses the same jobs for its makespan line (``for_run=False``: no todo file
is written, and the shards of tasks whose data is not downloaded count as estimated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ptransfer.embed.shard_sizing import gpu_seconds
from ptransfer.embed.shards import write_todo
from ptransfer.sweep.jobs import PLANNING_SIZES, CellPlan, SweepPlan, cell_extraction
from ptransfer.sweep.schedule import Job, probe_seconds

GPU_HEADS = ("linear",)  # probes that train on a GPU (torch); the others fit on CPUs
ONEHOT_ALPHABET = 21  # one-hot features: this many values per residue (flattened)
GPU_SPEEDUP = 20.0  # a probe on a GPU against one CPU thread: a rough planning factor


@dataclass
class QueuedJob:
    """One job of the sweep: its schedule entry and how to launch it."""

    job: Job
    overrides: list[str]
    cell: CellPlan | None = None  # None: a shard job
    store: Path | None = None  # the store it writes (shard) or reads (probe cell)
    group: str | None = None  # the store group (``store.retain=until_done``)
    extra: list[str] = field(default_factory=list)  # overrides the dispatcher adds

    @property
    def name(self) -> str:
        return self.job.name


def queued_jobs(plan: SweepPlan, for_run: bool = True) -> list[QueuedJob]:
    """Every job of ``plan`` (see the module docstring), shard jobs first."""
    groups = {c.store: c.group for c in plan.cells if c.store is not None and c.group}
    jobs: list[QueuedJob] = []
    shards_of: dict[Path, tuple[str, ...]] = {}
    for store in plan.stores.values():
        names = []
        for shard in store.shards:
            overrides = list(store.overrides)
            if for_run:
                todo = write_todo(store.path, shard, store.spec)
                overrides.append(f"extract.shard='{todo}'")
            names.append(f"{shard.name} of {store.path.name}")
            jobs.append(QueuedJob(Job(names[-1], "gpu", gpu_seconds(store.n_params,
                                                                    shard.tokens)),
                                  overrides, None, store.path, groups.get(store.path)))
        if not for_run:
            for number, tokens in enumerate(store.estimated_shards()):
                names.append(f"estimated shard {number} of {store.path.name}")
                jobs.append(QueuedJob(Job(names[-1], "gpu", gpu_seconds(store.n_params,
                                                                        tokens)),
                                      [], None, store.path, groups.get(store.path)))
        shards_of[store.path] = tuple(names)
    for cell in plan.phase1_cells():  # streaming: runs its model as it fits
        jobs.append(QueuedJob(Job(cell.cell_id, "gpu", cell_extraction(cell, plan.stores)[1]),
                              list(cell.overrides), cell))
    for cell in plan.phase2_cells():
        kind = "gpu" if cell.head in GPU_HEADS else "cpu"
        job = Job(cell.cell_id, kind, _probe_seconds(cell, plan),
                  shards_of.get(cell.store, ()) if cell.store is not None else ())
        jobs.append(QueuedJob(job, list(cell.overrides), cell, cell.store, cell.group))
    return jobs


def _probe_seconds(cell: CellPlan, plan: SweepPlan) -> float:
    """A probe cell's estimate: its rows (sequences, or residues per residue) and width; a
    probe on a GPU (``GPU_HEADS``) ``GPU_SPEEDUP`` times faster than on a CPU."""
    n, length = (cell.task.size() if cell.task is not None
                 else PLANNING_SIZES.get(cell.dataset, (0, 0.0)))
    head = cell.head or "ridge"
    if cell.store is None:  # one-hot: one layer, ONEHOT_ALPHABET x length wide
        seconds = probe_seconds(head, n, int(ONEHOT_ALPHABET * length), 1)
    else:
        store = plan.stores[cell.store]
        rows = int(n * length) if store.level == "residue" else n
        seconds = probe_seconds(head, rows, store.dim, store.n_layers)
    return seconds / GPU_SPEEDUP if head in GPU_HEADS else seconds


def schedule_jobs(queued: list[QueuedJob]) -> list[Job]:
    return [q.job for q in queued]


__all__ = ["GPU_HEADS", "QueuedJob", "queued_jobs", "schedule_jobs"]
