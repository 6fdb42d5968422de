"""What a sweep says at its end: each cell's main metric per layer, and the sweep's counts.

Every job records ``{state, cell_id, ...}`` in a ``job_status.json`` in its Hydra output
folder (``sweep.job``); ``SweepSummary`` reads them at the end of a multirun to list
extracted shards, cells run, skipped and failed (the CLI then exits non-zero on failures).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

JOB_STATUS = "job_status.json"
NOT_LAUNCHED = "not_launched.json"  # the sweeper's cells it had no job to launch for
FAILED = {"count": 0}  # failures seen by this process (single runs, basic launcher)


def print_cell_summary(frame) -> None:
    """Main metric per layer on val and every test set: what a user looks at first."""
    main = frame[frame.main_metric]
    if main.empty:
        return
    table = main.pivot_table(index="layer", columns="eval_set", values="value", aggfunc="first")
    metric = main.metric.iloc[0]
    best = main[main.best_layer.astype(bool)].layer
    choice = (f"best on val: layer {int(best.iloc[0])}" if len(best) else
              f"no best layer: every layer's validation {metric} is NaN")
    print(f"\n{frame.task.iloc[0]} | {frame.model.iloc[0]} | {frame.ablation.iloc[0]} | "
          f"seed {frame.seed.iloc[0]} | {metric} per layer ({choice})")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))


def summarise_sweep(sweep_dir: Path, phase: str | None = None) -> dict[str, list[dict]]:
    """Group the job statuses found under a multirun folder by state: the cells' (``phase``
    None: jobs of cells, and cells the sweeper did not need to launch), or the phase-1
    shard jobs' (``phase="extract"``)."""
    groups: dict[str, list[dict]] = {"done": [], "skipped": [], "failed": [], "excluded": []}
    statuses = [json.loads(p.read_text()) for p in sorted(sweep_dir.rglob(JOB_STATUS))]
    record = sweep_dir / NOT_LAUNCHED
    if record.is_file():
        statuses += json.loads(record.read_text())
    for status in statuses:
        if status.get("phase") == phase:
            groups.setdefault(status["state"], []).append(status)
    return groups


class SweepSummary(Callback):
    """At the end of a multirun: how many shards this sweep published and how many another
    writer published while its jobs waited (a second sweep on the same folder), how many
    cells ran, were skipped, failed (with errors)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        shards = summarise_sweep(sweep_dir, phase="extract")
        if any(shards.values()):
            adopted = len(shards.get("adopted", [])) + len(shards["skipped"])
            print(f"\nextraction: {sum(len(v) for v in shards.values())} shard jobs: "
                  f"{len(shards['done'])} published, {adopted} adopted from another writer, "
                  f"{len(shards['failed'])} failed")
        groups = summarise_sweep(sweep_dir)
        total = sum(len(v) for k, v in groups.items() if k != "excluded")
        print(f"\nsweep: {total} cells: {len(groups['done'])} run, "
              f"{len(groups['skipped'])} skipped (already complete), "
              f"{len(groups['failed'])} failed "
              f"({len(groups['excluded'])} swept combinations outside the design)")
        if not groups["done"] and groups["skipped"] and not groups["failed"]:
            print("nothing to do: every cell of this sweep was already complete")
        for status in shards["failed"]:
            print(f"  FAILED shard {status['shard']}: {status['error']}\n    log: {status['log']}")
        for status in groups["failed"]:
            print(f"  FAILED {status['cell_id']}: {status['error']}\n    log: {status['log']}")
        # The sweep's statuses are the record (a job whose status a full disk kept from
        # being written still counted in this process).
        FAILED["count"] = max(FAILED["count"], len(groups["failed"]) + len(shards["failed"]))
