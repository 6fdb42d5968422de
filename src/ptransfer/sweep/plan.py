"""``ptransfer plan``: what a sweep would do, without running anything, in seconds.

Expands ``hydra.sweeper.params`` (plus any ``key=a,b`` overrides) into cells exactly as the
sweeper does (``sweep.expand``: one compose per choice, not per combination), applies the
design rules (``grid``), checks which cells are already complete, and lists the two phases
of ``ptransfer run -m`` (``sweep.jobs``): phase-1 jobs (each store's shards with the GPU time
each is estimated to take, and streaming cells) and phase-2 jobs (cells that only read).
Disk and GPU estimates use each task as a cell loads it (``subsample`` included); tasks whose
data is absent use planning sizes. The numbers the estimates use are stated in the output.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from ptransfer.embed.diskspace import size_text
from ptransfer.sweep.jobs import (
    EFFECTIVE_TFLOPS,
    PLANNING_SIZES,
    SweepPlan,
    TaskCache,
    cell_extraction,
    gpu_seconds,
    plan_sweep,
)

TASK_SIZES = PLANNING_SIZES  # the planning sizes (unique sequences, mean embedded length)
__all__ = ["EFFECTIVE_TFLOPS", "TASK_SIZES", "PlannedCell", "expand_sweep", "plan_cells",
           "plan_totals", "print_plan"]


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
    memory: str | None = None  # one-hot: feature width and memory estimate (cell/memory.py)


class PlannedCells(list):
    """``PlannedCell`` in sweep order, with the phase plan (``sweep``) they came from."""

    sweep: SweepPlan | None = None
    wave_stores: int = 1


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


def store_key(cell) -> str:
    """Which extraction a cell pays for: cells of one dataset and encoder identity share
    one; a streaming cell pays its own forward passes (its cell id); one-hot computes its
    features in memory and extracts nothing ("")."""
    if cell.phase == 1:
        return cell.cell_id
    if cell.store is None:
        return ""
    return json.dumps([cell.dataset, cell.identity], sort_keys=True)


def plan_cells(conf_dir: Path, overrides: list[str]) -> PlannedCells:
    from ptransfer.cell.config_checks import _fixed_overrides, check_config
    from ptransfer.cell.memory import plan_memory
    from ptransfer.cell.spec import cell_spec
    from ptransfer.sweep.expand import SweepExpander, group_checker, sweep_lists
    from ptransfer.sweep.jobs import wave_size

    def each(cell, cfg) -> None:
        if cell.to_run and cfg.model.get("family") == "onehot":
            cell.memory = plan_memory(cell_spec(cfg))

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        base = compose("config", overrides=_fixed_overrides(overrides), return_hydra_config=True)
        params = base.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params, resolve=False) if params else {}
        loader = GlobalHydra.instance().config_loader()
        expander = SweepExpander(lambda o: compose("config", overrides=o),
                                 sweep_lists(params, overrides), group_checker(loader),
                                 check=lambda c: check_config(c, conf_dir),
                                 repository=getattr(loader, "repository", None))
        sweep = plan_sweep(expander, TaskCache(), each=each)
        cells = PlannedCells()
        for cell in sweep.cells:
            disk, gpu = cell_extraction(cell, sweep.stores) if cell.to_run else (0.0, 0.0)
            cells.append(PlannedCell(cell.overrides, cell.cell_id, cell.done, cell.excluded,
                                     disk, gpu, store_key(cell), cell.state, cell.memory))
        cells.sweep = sweep
        cells.wave_stores = wave_size(base)
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
    from ptransfer.sweep.checkpoint_plan import checkpoint_lines
    from ptransfer.sweep.retention import disk_lines

    cells = plan_cells(conf_dir, overrides)
    totals = plan_totals(cells)
    real = [c for c in cells if c.excluded is None]
    todo = totals["todo"]
    disk = totals["disk_bytes"]
    gpu_h = totals["gpu_seconds"] / 3600
    print(f"sweep: {len(cells)} combinations, {len(real)} cells in the design "
          f"({len(cells) - len(real)} outside it)")
    print(f"done:  {len(real) - len(todo)} complete, {len(todo)} to run")
    print_unfinished(todo)
    for line in phase_lines(getattr(cells, "sweep", None)):
        print(line)
    print(f"disk:  ~{disk / 1e9:.1f} GB of new embeddings from {totals['extractions']} "
          f"extractions (cells of one dataset and encoder share one; streaming cells store "
          f"nothing; one-hot needs none)")
    for line in disk_lines(todo, getattr(cells, "wave_stores", 1)):  # retain=all | until_done
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


def phase_lines(sweep: SweepPlan | None, max_stores: int = 60) -> list[str]:
    """The two phases of ``ptransfer run -m``: phase-1 jobs per store (each shard's tokens
    and estimated GPU time) and streaming cells; phase-2 cells."""
    if sweep is None:
        return []
    streaming = sweep.phase1_cells()
    stores = [s for s in sweep.stores.values() if s.shards or s.estimated]
    n_shards = sum(len(s.shards) + len(s.estimated_shards()) for s in stores)
    lines = [f"phase 1 (extraction, GPU): {n_shards + len(streaming)} jobs: {n_shards} shard(s) "
             f"of {len(stores)} store(s), {len(streaming)} streaming cell(s) (they embed as "
             "they fit)"]
    for store in stores[:max_stores]:
        shards = [(s.tokens, "") for s in store.shards]
        shards += [(t, "~") for t in store.estimated_shards()]  # data absent: planning sizes
        each = ", ".join(f"{mark}{tokens / 1e6:.2f}M tok {_hours(store.n_params, tokens)}"
                         for tokens, mark in shards[:6])
        more = f", ... ({len(shards) - 6} more)" if len(shards) > 6 else ""
        lines.append(f"  store {store.identity.get('model')} {store.level} "
                     f"{_identity_words(store.identity)} {store.path.name}: {len(shards)} "
                     f"shard(s): {each}{more}; ~{size_text(store.new_bytes())} new")
    if len(stores) > max_stores:
        lines.append(f"  ... and {len(stores) - max_stores} more stores")
    phase2 = sweep.phase2_cells()
    onehot = sum(1 for c in phase2 if c.store is None)
    lines.append(f"phase 2 (probes, read published stores, load no model): {len(phase2)} "
                 f"jobs ({len(phase2) - onehot} store readers, {onehot} one-hot)")
    return lines


def _hours(n_params: int, tokens: float) -> str:
    seconds = gpu_seconds(n_params, tokens)
    return f"~{seconds / 60:.1f} GPU-min" if seconds < 3600 else f"~{seconds / 3600:.2f} GPU-h"


def _identity_words(identity: dict) -> str:
    words = [str(identity.get("checkpoint")), str(identity.get("ablation"))]
    if identity.get("seed") is not None:
        words.append(f"s{identity['seed']}")
    return " ".join(words)


def print_unfinished(todo: list[PlannedCell]) -> None:
    """Cells to run that a process is running now, or that one left interrupted (killed)."""
    from ptransfer.cell.status import INTERRUPTED, RUNNING

    for state, words in ((INTERRUPTED, "interrupted (their process died; a run redoes them)"),
                         (RUNNING, "running now (a live process, this host or a recent "
                                   "heartbeat)")):
        ids = [c.cell_id for c in todo if c.state == state]
        if ids:
            print(f"{state}: {len(ids)} {words}: {', '.join(ids)}")
