"""``ptransfer plan``: what a sweep would do, without running anything.

Expands ``hydra.sweeper.params`` (plus any ``key=a,b`` overrides) into cells exactly as the
basic sweeper does, applies the design rules (``grid``), checks which cells are already
complete, and estimates embedding disk and GPU time from model sizes and task sizes.
The estimates are rough by design; the numbers they use are stated in the output.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from ptransfer.embed.diskspace import expected_store_bytes
from ptransfer.grid.task_data import declared_shape, planned_head

# Approximate task sizes (unique sequences, mean embedded length) from the FLIP and NetSurfP
# releases; GB1 is embedded as its 56-residue domain (see conf/task/gb1_*.yaml).
TASK_SIZES = {
    "gb1": (8_733, 56),
    "aav": (82_583, 735),
    "meltome": (27_951, 544),
    "scl": (12_993, 520),
    "ss3": (11_815, 255),
    "synthetic": (600, 40),
}
EFFECTIVE_TFLOPS = 100.0  # bf16 on one A100/H100 at ~30-40 % utilisation: a rough planning rate


@dataclass
class PlannedCell:
    overrides: list[str]
    cell_id: str
    done: bool
    excluded: str | None
    disk_bytes: float
    gpu_seconds: float
    store_key: str  # cells of one dataset and encoder identity share an embedding store ("": none)
    state: str | None = None  # status.json's state; a dead "running" cell reads "interrupted"
    memory: str | None = None  # one-hot: feature width and memory estimate (grid/memory.py)


def expand_sweep(cfg: DictConfig, cli_overrides: list[str]) -> list[list[str]]:
    """Cartesian product of the sweep's choices, as lists of override strings."""
    params = dict(cfg.hydra.sweeper.params or {})
    fixed = []
    for item in cli_overrides:
        key, _, value = item.partition("=")
        # A command-line value replaces the preset's sweep of that key, as Hydra's sweeper does.
        if ("," in value or key in params) and not key.startswith("+experiment"):
            params[key] = value
        else:
            fixed.append(item)
    parser = OverridesParser.create()
    axes = []
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        axes.append([f"{override.get_key_element()}={v}" for v in values])
    return [fixed + list(combo) for combo in itertools.product(*axes)] or [fixed]


def estimate(cfg: DictConfig, head: str) -> tuple[float, float]:
    """(embedding bytes on disk, GPU seconds) of one cell."""
    n_seq, mean_len = TASK_SIZES.get(cfg.task.get("dataset", ""), TASK_SIZES.get(cfg.task.name, (0, 0)))
    family = cfg.model.get("family", "onehot")
    if family == "onehot":
        return 0.0, 0.0
    n_layers = int(cfg.model.n_blocks) + 1
    dim = int(cfg.model.dim)
    if declared_shape(cfg.task)[0] == "residue":
        disk = 0.0 if head == "streaming" else expected_store_bytes(
            n_seq * mean_len, n_layers, dim, cfg.extract.residue_dtype)
    else:
        disk = expected_store_bytes(n_seq, n_layers, dim,
                                    cfg.extract.get("pooled_dtype", "float32"))
    flops = 2.0 * float(cfg.model.n_params) * n_seq * (mean_len + 2)
    return disk, flops / (EFFECTIVE_TFLOPS * 1e12)


def store_key(cfg: DictConfig, head: str, cell_id: str) -> str:
    """Which extraction a cell pays for: cells of one dataset and encoder identity share
    one; a streaming cell pays its own forward passes (its cell id); one-hot computes its
    features in memory and extracts nothing ("")."""
    from ptransfer.grid.cell import encoder_identity

    if cfg.model.get("family", "onehot") == "onehot":
        return ""
    if head == "streaming":
        return cell_id
    return json.dumps([cfg.task.get("dataset", cfg.task.name), encoder_identity(cfg)],
                      sort_keys=True)


def plan_cells(conf_dir: Path, overrides: list[str]) -> list[PlannedCell]:
    from ptransfer.grid.cell import cell_key, is_done
    from ptransfer.grid.memory import plan_memory
    from ptransfer.grid.status import effective_state, read_status
    from ptransfer.grid.sweep import excluded_reason
    from ptransfer.grid.validate_config import check_config

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        base = compose("config", overrides=[o for o in overrides if "," not in o],
                       return_hydra_config=True)
        cells = []
        for combo in expand_sweep(base, overrides):
            cfg = compose("config", overrides=combo)
            check_config(cfg, conf_dir)
            head = planned_head(cfg)  # the rule run_cell applies, from the config alone
            disk, gpu = estimate(cfg, head)
            key = cell_key(cfg)
            store = store_key(cfg, head, key.cell_id)
            cells.append(PlannedCell(combo, key.cell_id, is_done(key), excluded_reason(cfg),
                                     disk, gpu, store, effective_state(read_status(key.dir))))
            if cells[-1].excluded is None and not cells[-1].done:
                cells[-1].memory = plan_memory(cfg)
    return cells


def plan_totals(cells: list[PlannedCell]) -> dict:
    """Counts and estimates of a planned sweep: cells in the design, done, to run, and the
    extractions (stores) the cells to run need, with their disk bytes and GPU seconds."""
    real = [c for c in cells if c.excluded is None]
    todo = [c for c in real if not c.done]
    # Cells sharing a store (GB1's splits, AAV's) embed once: count each store once.
    stores = list({c.store_key: c for c in todo if c.store_key}.values())
    return {"combinations": len(cells), "cells": len(real), "done": len(real) - len(todo),
            "todo": todo, "extractions": len(stores),
            "disk_bytes": sum(c.disk_bytes for c in stores),
            "gpu_seconds": sum(c.gpu_seconds for c in stores)}


def print_plan(conf_dir: Path, overrides: list[str]) -> None:
    from ptransfer.grid.checkpoint_plan import checkpoint_lines
    from ptransfer.grid.retention import disk_lines

    cells = plan_cells(conf_dir, overrides)
    totals = plan_totals(cells)
    real = [c for c in cells if c.excluded is None]
    todo = totals["todo"]
    stores = range(totals["extractions"])
    disk = totals["disk_bytes"]
    gpu_h = totals["gpu_seconds"] / 3600
    print(f"sweep: {len(cells)} combinations, {len(real)} cells in the design "
          f"({len(cells) - len(real)} outside it)")
    print(f"done:  {len(real) - len(todo)} complete, {len(todo)} to run")
    print_unfinished(todo)
    print(f"disk:  ~{disk / 1e9:.1f} GB of new embeddings from {len(stores)} extractions "
          f"(cells of one dataset and encoder share one; streaming cells store nothing; "
          f"one-hot needs none)")
    for line in disk_lines(todo):  # total vs peak under store.retain=all | until_done
        print(line)
    print(f"GPU:   ~{gpu_h:.1f} GPU-hours of forward passes at {EFFECTIVE_TFLOPS:.0f} effective "
          f"TFLOP/s (2 x params x tokens; probes not included)")
    for c in todo[:20]:
        print(f"  to run: {c.cell_id}")
    for c in todo:
        if c.memory:
            print(f"memory: {c.cell_id}: {c.memory}")
    if len(todo) > 20:
        print(f"  ... and {len(todo) - 20} more")
    for line in checkpoint_lines(conf_dir, overrides, expand_sweep):
        print(line)


def print_unfinished(todo: list[PlannedCell]) -> None:
    """Cells to run that a process is running now, or that one left interrupted (killed)."""
    from ptransfer.grid.status import INTERRUPTED, RUNNING

    for state, words in ((INTERRUPTED, "interrupted (their process died; a run redoes them)"),
                         (RUNNING, "running now (a live process, this host or a recent "
                                   "heartbeat)")):
        ids = [c.cell_id for c in todo if c.state == state]
        if ids:
            print(f"{state}: {len(ids)} {words}: {', '.join(ids)}")
