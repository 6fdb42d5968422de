"""A sweep planned: its cells, what each needs, and the shards of the stores they read.

``plan_sweep`` walks every combination of a sweep (``sweep.expand``) and sorts the cells of
the design that are not done:

- a cell reading an embedding store (per-protein probes, per-residue ``linear``) only reads
  (``phase`` 2); its store gets shard jobs, one per shard with work left
  (``embed.shards.plan_shards`` over the union of the sequences of the store's readers, minus
  the rows already published, sized by the ``extract.shard_*`` targets);
- a ``streaming`` per-residue cell embeds as it fits (no store), and a fine-tune cell
  (``tune=lora|full``) trains its model (no store): each runs a model (``phase`` 1), a GPU
  job of its own;
- a one-hot cell needs no model and no store (``phase`` 2, no input).

``ptransfer plan`` prints this plan; the sweeper (``hydra_plugins.ptransfer_sweeper``)
dispatches it (``sweep.queue``, ``sweep.dispatch``). Both load each distinct task once (for
the sequences of the shards and the exact disk and GPU estimates, subsample included); a
task that cannot be loaded (data not downloaded) is estimated from planning sizes instead
(``PLANNING_SIZES``), and its cells fail clearly when run.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ptransfer.cell.spec import FINETUNE_HEAD, CellSpec, cell_spec
from ptransfer.embed.batching import Batching
from ptransfer.embed.diskspace import expected_store_bytes
from ptransfer.embed.shard_sizing import (  # noqa: F401 - the plan's rate: jobs' API too
    EFFECTIVE_TFLOPS,
    ShardLimits,
    StoreWork,
    gpu_seconds,
)
from ptransfer.embed.shards import PlannedShard, plan_shards, sequence_tokens, shard_folder
from ptransfer.embed.store_files import sequence_key

log = logging.getLogger(__name__)

# Unique sequences and mean embedded length of the FLIP and NetSurfP releases, for tasks whose
# data is not on disk; GB1 is embedded as its 56-residue domain (conf/task/gb1_*.yaml).
PLANNING_SIZES = {
    "gb1": (8_733, 56),
    "aav": (82_583, 735),
    "meltome": (27_951, 544),
    "scl": (12_993, 520),
    "ss3": (11_815, 255),
    "synthetic": (600, 40),
}
@dataclass
class TaskData:
    """A task's unique sequences as a cell loads them (None: could not be loaded)."""

    dataset: str
    sequences: list[str] | None
    error: str = ""
    keyed: dict[str, str] = field(default_factory=dict)  # key -> sequence, hashed once

    def __post_init__(self) -> None:
        if self.sequences is not None and not self.keyed:
            self.keyed = {sequence_key(s): s for s in self.sequences}

    def size(self) -> tuple[int, float]:
        """(unique sequences, mean length): loaded, else the planning sizes."""
        if self.sequences is not None:
            n = len(self.sequences)
            return n, (sum(map(len, self.sequences)) / n if n else 0.0)
        return PLANNING_SIZES.get(self.dataset, (0, 0.0))


@dataclass
class StorePlan:
    """One store that to-run cells read: what its shard jobs must add to it."""

    path: Path
    level: str
    dtype: str
    identity: dict
    n_layers: int
    dim: int
    n_params: int
    limits: ShardLimits  # a shard's tokens and rows at most (extract.shard_* targets)
    overrides: list[str]  # a reading cell's combination: how its shard jobs compose
    spec: dict  # what a shard job needs to open the store
    batching: Batching | None = None  # the extraction's batches: shards are cut between them
    requested: dict[str, str] = field(default_factory=dict)  # key -> sequence (loaded tasks)
    tasks: list = field(default_factory=list)  # the TaskData requested (each once)
    per_task: dict = field(default_factory=dict)  # id(TaskData) -> (new rows, tokens)
    estimated: dict[str, tuple[int, float]] = field(default_factory=dict)  # unloaded datasets
    published: frozenset = frozenset()
    shards: list[PlannedShard] = field(default_factory=list)

    def plan(self) -> None:
        self.shards = plan_shards(self.path, self.requested, self.published, self.limits,
                                  self.batching)

    def estimated_shards(self) -> list[float]:
        """Tokens of each shard of the datasets that could not be loaded (planning sizes):
        as many as the shard targets need, equal."""
        tokens = sum(n * (length + 2) for n, length in self.estimated.values())
        rows = sum(n * (length if self.level == "residue" else 1)
                   for n, length in self.estimated.values())
        if not tokens:
            return []
        count = max(math.ceil(tokens / self.limits.max_tokens) if self.limits.max_tokens else 1,
                    math.ceil(rows / self.limits.max_rows) if self.limits.max_rows else 1)
        return [tokens / count] * count

    def new_bytes(self) -> float:
        todo = [s for shard in self.shards for s in shard.todo]
        rows = sum(map(len, todo)) if self.level == "residue" else len(todo)
        rows += sum(n * (length if self.level == "residue" else 1)
                    for n, length in self.estimated.values())
        return expected_store_bytes(rows, self.n_layers, self.dim, self.dtype)


@dataclass
class CellPlan:
    """One combination of the sweep, as planned."""

    index: int
    overrides: list[str]
    cell_id: str
    cell_dir: Path
    excluded: str | None
    done: bool
    state: str | None
    head: str | None
    phase: int | None  # 1: runs a model (streaming); 2: reads a store or one-hot; None: nothing
    store: Path | None
    dataset: str
    identity: dict | None
    task: TaskData | None
    n_params: int = 0
    group: str | None = None  # store group (retention): the encoder identity, every level
    memory: str | None = None
    tune_seconds: float | None = None  # a fine-tune cell's GPU time (plan: cell.tune)

    @property
    def to_run(self) -> bool:
        return self.excluded is None and not self.done


@dataclass
class SweepPlan:
    cells: list[CellPlan]
    stores: dict[Path, StorePlan]

    def phase1_cells(self) -> list[CellPlan]:
        return [c for c in self.cells if c.to_run and c.phase == 1]

    def phase2_cells(self) -> list[CellPlan]:
        return [c for c in self.cells if c.to_run and c.phase == 2]


_PLAIN_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")  # ${a.b}: a node of the config


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


class TaskCache:
    """Each distinct task (config + subsample) loaded and fingerprinted once per plan."""

    def __init__(self, load: bool = True) -> None:
        self.load = load
        self.fingerprints: dict[str, str] = {}
        self.data: dict[str, TaskData] = {}

    @staticmethod
    def key(cfg: DictConfig) -> str:
        """The task as configured: its config unresolved plus the values its plain
        interpolations (``${data.root}``) refer to, which is cheaper than resolving it for
        every combination; anything else (a resolver, a relative reference) is resolved."""
        raw = OmegaConf.to_container(cfg.task, resolve=False)
        texts = list(_strings(raw))
        if any(_PLAIN_REF.sub("", text).count("${") for text in texts):
            raw, refs = OmegaConf.to_container(cfg.task, resolve=True), []
        else:
            refs = sorted({ref for text in texts for ref in _PLAIN_REF.findall(text)})
        values = [str(OmegaConf.select(cfg, ref, default=None)) for ref in refs]
        return json.dumps([raw, values, OmegaConf.to_container(cfg.subsample)
                           if cfg.subsample else None], sort_keys=True, default=str)

    def fingerprint(self, cfg: DictConfig, spec: CellSpec) -> str:
        """The data fingerprint of ``cfg``'s task (``spec``: the cell's spec)."""
        from ptransfer.cell.key import data_fingerprint

        key = self.key(cfg)
        if key not in self.fingerprints:
            self.fingerprints[key] = data_fingerprint(spec)
        return self.fingerprints[key]

    def task_data(self, cfg: DictConfig, spec: CellSpec) -> TaskData:
        key = self.key(cfg)
        if key not in self.data:
            self.data[key] = self._load(spec)
        return self.data[key]

    def _load(self, spec: CellSpec) -> TaskData:
        from ptransfer.cell.task_data import load_task

        dataset = str(spec.task.config.get("dataset", spec.task.name))
        if not self.load:
            return TaskData(dataset, None, "not loaded")
        try:
            return TaskData(dataset, load_task(spec.task, spec.results_dir).all_sequences())
        except Exception as err:  # noqa: BLE001 - planning goes on; the cell reports it
            while err.__cause__ is not None:
                err = err.__cause__
            return TaskData(dataset, None, (str(err).splitlines() or [""])[0])


def plan_sweep(expander, tasks: TaskCache | None = None, check=None, each=None) -> SweepPlan:
    """Every combination of ``expander`` (``sweep.expand.SweepExpander``) as a ``CellPlan``;
    the stores read by cells to run, with their shards. ``check(cfg)`` validates a config
    first; ``each(cell, cfg)`` runs while its config is current (plan's memory lines)."""
    tasks = tasks or TaskCache()
    cells: list[CellPlan] = []
    stores: dict[Path, StorePlan] = {}
    for index, (combo, cfg) in enumerate(expander):
        if check is not None:
            check(cfg)
        cell = _plan_cell(index, combo, cfg, tasks)
        if each is not None:
            each(cell, cfg)
        cells.append(cell)
        if cell.to_run and cell.store is not None:
            store = stores.get(cell.store) or stores.setdefault(
                cell.store, _store_plan(cfg, cell_spec(cfg), cell))
            _request(store, cell.task)
    plan = SweepPlan(cells, stores)
    replan_stores(plan)
    return plan


def replan_stores(plan: SweepPlan) -> None:
    """Each store's published rows read again, and its shards with work left planned."""
    for store in plan.stores.values():
        store.published = _published(store)
        store.plan()


def _plan_cell(index: int, combo: list[str], cfg: DictConfig, tasks: TaskCache) -> CellPlan:
    from ptransfer.cell.key import cell_key, encoder_identity, is_done
    from ptransfer.cell.status import effective_state, read_status
    from ptransfer.sweep.design import excluded_reason

    dataset = str(cfg.task.get("dataset", cfg.task.name))
    excluded = excluded_reason(cfg)
    if excluded is not None:  # not a cell: no key to compute (half of a big sweep)
        name = "__".join([str(cfg.task.name), str(cfg.model.name), str(cfg.checkpoint),
                          str(cfg.ablation.name), f"s{cfg.seed}"])
        return CellPlan(index, combo, name, Path(), excluded, False, None, None, None, None,
                        dataset, None, None)
    spec = cell_spec(cfg)
    key = cell_key(spec, tasks.fingerprint(cfg, spec))
    done = is_done(key) and not cfg.get("force", False)  # force=true: run it again
    cell = CellPlan(index, combo, key.cell_id, key.dir, None, done,
                    effective_state(read_status(key.dir)), None, None, None, dataset, None, None)
    if done:
        return cell
    cell.head = spec.planned_head
    if spec.encoder.family == "onehot":
        cell.phase = 2
        return cell
    cell.identity = encoder_identity(spec.encoder)
    cell.task = tasks.task_data(cfg, spec)
    cell.n_params = int(spec.encoder.config.get("n_params", 0))
    if spec.loads_model:  # streaming probes and fine-tunes run their model, read no store
        cell.phase = 1
        if cell.head == FINETUNE_HEAD:  # its GPU time orders the dispatch; plan prints both
            from ptransfer.cell.tune import plan_tune

            cell.memory, cell.tune_seconds = plan_tune(spec, EFFECTIVE_TFLOPS)
        return cell
    from ptransfer.embed.store import store_location
    from ptransfer.sweep.retention import store_group

    level = spec.task.declared_shape[0]
    cell.store = store_location(spec.store_dir, cell.identity, level, spec.extract)[0]
    cell.group = store_group(spec)[0]
    cell.phase = 2
    return cell


def _store_plan(cfg: DictConfig, spec: CellSpec, cell: CellPlan) -> StorePlan:
    from ptransfer.embed.store import store_location

    level = spec.task.declared_shape[0]
    path, identity, dtype = store_location(spec.store_dir, cell.identity, level, spec.extract)
    encoder, extract = spec.encoder, spec.extract
    opening = {"level": level, "dtype": dtype, "identity": identity,
               "n_layers": encoder.n_layers, "dim": encoder.dim,
               "compression": extract.compression, "commit_seconds": spec.commit_seconds}
    batching = Batching(extract.toks_per_batch, encoder.config.get("max_len"),
                        extract.length_policy)
    n_params = int(encoder.config["n_params"])
    limits = extract.sizing().limits(StoreWork(n_params, level, encoder.n_layers, encoder.dim,
                                               dtype))
    return StorePlan(path, level, dtype, identity, encoder.n_layers, encoder.dim, n_params,
                     limits, list(cell.overrides), opening, batching=batching)


def _request(store: StorePlan, task: TaskData) -> None:
    if any(known is task for known in store.tasks):
        return  # another cell of the same task: its sequences are in already
    store.tasks.append(task)
    if task.sequences is not None:
        store.requested.update(task.keyed)
    else:
        store.estimated[task.dataset] = task.size()


def _published(store: StorePlan) -> frozenset:
    """Keys the store holds now (read-only: planning writes nothing)."""
    if not store.path.exists() and not shard_folder(store.path).exists():
        return frozenset()
    from ptransfer.embed.store import EmbeddingStore

    opened = EmbeddingStore(store.path, store.identity, store.n_layers, store.dim,
                            level=store.level, dtype=store.dtype, read_only=True)
    return opened.published_keys()


def cell_extraction(cell: CellPlan, stores: dict[Path, StorePlan]) -> tuple[float, float]:
    """(new store bytes, GPU seconds) a cell to run pays for, per ``[dataset, identity]``.

    Store readers: the rows of their dataset still missing from their store (cells of one
    dataset and store share these numbers); streaming cells: a forward pass over their task.
    """
    if cell.tune_seconds is not None:
        return 0.0, cell.tune_seconds
    if cell.phase == 1 and cell.task is not None:
        n, length = cell.task.size()
        return 0.0, gpu_seconds(cell.n_params, n * (length + 2))
    if cell.store is None:
        return 0.0, 0.0
    store = stores[cell.store]
    if cell.task is not None and cell.task.sequences is not None:
        if id(cell.task) not in store.per_task:  # cells of one task: computed once
            todo = [s for k, s in cell.task.keyed.items() if k not in store.published]
            store.per_task[id(cell.task)] = (
                sum(map(len, todo)) if store.level == "residue" else len(todo),
                sum(sequence_tokens(s) for s in todo))
        rows, tokens = store.per_task[id(cell.task)]
    else:
        n, length = cell.task.size() if cell.task else (0, 0.0)
        rows = n * (length if store.level == "residue" else 1)
        tokens = n * (length + 2)
    return (expected_store_bytes(rows, store.n_layers, store.dim, store.dtype),
            gpu_seconds(store.n_params, tokens))


def launcher_parallelism(launcher: dict, n_jobs_hint: int | None = None) -> int:
    """How many jobs a launcher config runs at once: joblib's ``n_jobs`` (<= 0: the CPUs),
    Slurm's ``array_parallelism``; the local submitit launcher runs every job of a batch at
    once (``n_jobs_hint``); the basic launcher one at a time."""
    import os

    target = str(launcher.get("_target_", ""))
    if "joblib" in target:
        n_jobs = int(launcher.get("n_jobs", -1) or -1)
        return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    if "SlurmLauncher" in target:
        return max(1, int(launcher.get("array_parallelism", 256) or 256))
    if "LocalLauncher" in target:
        return max(1, n_jobs_hint or 1)
    return 1


def wave_size(cfg: DictConfig) -> int:
    """Store groups extracted per wave under ``store.retain=until_done``: ``store.wave_stores``,
    or (0) the GPU jobs' launcher's parallelism, so every GPU slot has a store to extract."""
    configured = int((cfg.get("store") or {}).get("wave_stores", 0) or 0)
    if configured > 0:
        return configured
    hydra = cfg.get("hydra")
    if hydra is None:
        return 1
    launcher = _plain(hydra.get("launcher"))
    launcher.update(_plain((hydra.get("sweeper") or {}).get("extract_launcher")))
    return launcher_parallelism(launcher)


def _plain(node) -> dict:
    """A launcher node as plain values, each resolved where it can be (``n_jobs:
    ${hydra.launcher.n_jobs}``); a value that cannot be resolved here stays as written."""
    if node is None:
        return {}
    if not OmegaConf.is_config(node):
        return dict(node)
    plain = OmegaConf.to_container(node, resolve=False)
    for key in plain:
        try:
            value = node[key]  # resolved on access
        except Exception:  # noqa: BLE001 - e.g. ${now:...} outside a run: keep it unresolved
            continue
        if not OmegaConf.is_config(value):
            plain[key] = value
    return plain
