"""``ptransfer plan``: what a sweep would do, without running anything, in seconds.

Expands ``hydra.sweeper.params`` (plus any ``key=a,b`` overrides) into cells exactly as the
sweeper does (``sweep.expand``: one compose per choice, not per combination), applies the
design rules (``sweep.design``), checks which cells are already complete, and lists the jobs
``ptransfer run -m`` dispatches (``sweep.queue``): shard jobs (each store's shards with the
GPU time each is estimated to take) and streaming cells on GPUs, probe cells on CPUs; the
makespan those jobs are estimated to take on the launcher's slots (``sweep.schedule``).
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
    launchers: tuple[dict, dict] = ({}, {})  # hydra.launcher as GPU / CPU jobs get it


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
    from ptransfer.sweep.launch import launcher_settings

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
        cells.launchers = (launcher_settings(base, "extract"), launcher_settings(base, "probe"))
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
    print(f"sweep: {len(cells)} combinations, {len(real)} cells in the design "
          f"({len(cells) - len(real)} outside it)")
    print(f"done:  {len(real) - len(todo)} complete, {len(todo)} to run")
    print_unfinished(todo)
    launchers = getattr(cells, "launchers", ({}, {}))
    for line in job_lines(getattr(cells, "sweep", None), *launchers):
        print(line)
    print(f"disk:  ~{disk / 1e9:.1f} GB of new embeddings from {totals['extractions']} "
          f"extractions (cells of one dataset and encoder share one; streaming cells store "
          f"nothing; one-hot needs none)")
    for line in disk_lines(todo, getattr(cells, "wave_stores", 1)):  # retain=all | until_done
        print(line)
    for c in todo[:20]:
        print(f"  to run: {c.cell_id}")
    for c in todo:
        if c.memory:
            print(f"memory: {c.cell_id}: {c.memory}")
    if len(todo) > 20:
        print(f"  ... and {len(todo) - 20} more")
    for line in checkpoint_lines(conf_dir, overrides, expand_sweep):
        print(line)


def job_lines(sweep: SweepPlan | None, extract: dict | None = None,
              probe: dict | None = None, max_stores: int = 60) -> list[str]:
    """The jobs ``ptransfer run -m`` dispatches (``sweep.queue``): shard jobs per store
    (tokens and estimated GPU time of each) and streaming cells on GPU slots, probe cells on
    CPU slots; the GPU estimate; the makespan estimate for the launchers' slots
    (``extract`` / ``probe``: ``hydra.launcher`` as GPU / CPU jobs get it); a warning per
    shard over the GPU launcher's ``timeout_min``."""
    if sweep is None:
        return []
    from ptransfer.sweep.queue import queued_jobs
    from ptransfer.sweep.schedule import duration_text

    jobs = queued_jobs(sweep, for_run=False)
    streaming = sweep.phase1_cells()
    stores = [s for s in sweep.stores.values() if s.shards or s.estimated]
    shard_jobs = [j for j in jobs if j.cell is None]
    cells = [j for j in jobs if j.cell is not None and j.cell.phase == 2]
    onehot = sum(1 for j in cells if j.store is None)
    lines = [f"jobs (each starts when its inputs are published and a slot is free): "
             f"{len(shard_jobs)} shard job(s) of {len(stores)} store(s) and {len(streaming)} "
             f"streaming or fine-tune cell(s) (they run their model) on GPUs; {len(cells)} probe "
             f"cell(s) ({len(cells) - onehot} store readers, {onehot} one-hot: at once) "
             f"that load no model, on CPUs ({sum(j.job.kind == 'gpu' for j in cells)} "
             f"on GPUs: head=linear)"]
    for store in stores[:max_stores]:
        shards = [(s.tokens, "") for s in store.shards]
        shards += [(t, "~") for t in store.estimated_shards()]  # data absent: planning sizes
        each = ", ".join(f"{mark}{tokens_text(tokens)} {_hours(store.n_params, tokens)}"
                         for tokens, mark in shards[:6])
        more = f", ... ({len(shards) - 6} more)" if len(shards) > 6 else ""
        lines.append(f"  store {store.identity.get('model')} {store.level} "
                     f"{_identity_words(store.identity)} {store.path.name}: {len(shards)} "
                     f"shard(s): {each}{more}; ~{size_text(store.new_bytes())} new")
    if len(stores) > max_stores:
        lines.append(f"  ... and {len(stores) - max_stores} more stores")
    shard_s = sum(j.job.seconds for j in shard_jobs)
    stream_s = sum(j.job.seconds for j in jobs if j.cell is not None and j.cell.phase == 1)
    lines.append(f"GPU:   ~{(shard_s + stream_s) / 3600:.1f} GPU-hours of forward passes "
                 f"(shards {duration_text(shard_s)}, streaming and fine-tune cells "
                 f"{duration_text(stream_s)}) at {EFFECTIVE_TFLOPS:.0f} effective TFLOP/s "
                 "(2 x params x tokens; fine-tunes: every epoch of every learning rate, "
                 "6 x params x tokens (LoRA 4 x); probes not included)")
    return lines + makespan_lines(sweep, jobs, extract or {}, probe or {})


def makespan_lines(sweep: SweepPlan, jobs: list, extract: dict, probe: dict) -> list[str]:
    """The estimated makespan on the launchers' slots (``sweep.schedule``) and the
    time-limit warnings."""
    from ptransfer.embed.shard_sizing import StoreWork, over_time_limit
    from ptransfer.sweep.dispatch import slot_counts
    from ptransfer.sweep.schedule import duration_text, lower_bound, simulate

    slots, runner = slot_counts(extract, probe)
    schedule = [j.job for j in jobs]
    if not schedule:
        return []
    gpu_bound, chain = lower_bound(schedule, slots["gpu"])
    if runner == "serial":  # the basic launcher: one job at a time
        makespan, where = sum(j.seconds for j in schedule), "one job at a time (basic launcher)"
    else:
        makespan = simulate(schedule, slots)[0]
        where = f"{slots['gpu']} GPU slot(s) + {slots['cpu']} CPU slot(s)"
    lines = [f"makespan: ~{duration_text(makespan)} on {where}, by the estimates above and a "
             f"probe model (sweep/schedule.py); lower bound "
             f"{duration_text(max(gpu_bound, chain))} (GPU work / GPU slots "
             f"{duration_text(gpu_bound)}, longest chain {duration_text(chain)})"]
    limit = extract.get("timeout_min")
    if limit:
        for store in sweep.stores.values():
            work = StoreWork(store.n_params, store.level, store.n_layers, store.dim,
                             store.dtype)
            lines += [f"WARNING: {line}" for line in over_time_limit(
                store.shards, work, float(limit), "hydra.launcher.timeout_min",
                store.path.name)]
    return lines


def tokens_text(tokens: float) -> str:
    """``42 tok``, ``8.7k tok``, ``2.92M tok``: readable at every size a shard has."""
    if tokens < 1e3:
        return f"{tokens:.0f} tok"
    return f"{tokens / 1e3:.1f}k tok" if tokens < 1e6 else f"{tokens / 1e6:.2f}M tok"


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
