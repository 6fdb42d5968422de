"""How much memory a cell's features and probe will take, and the refusal when it cannot fit.

Per-protein one-hot is the one feature set whose width grows with the data: every protein is
zero-padded to the task's longest sequence and flattened (20 x L_pad columns), and the cell
holds every split of it in memory (``embed.features.memory_features``). One protein of
13,100 residues turns a 5,000-protein task into 262,000 columns and tens of GB. So before
any feature is built the cell logs the width and an estimate, and refuses with a hint
(``model.max_len``) when the estimate exceeds the memory the machine has available;
``ptransfer plan`` prints the same figures.

The estimate (float32 features, 4 B a value):

- held: every split and layer of in-memory features (n_layers x rows x width);
- probe: the probe's full-size working copies, ``PROBE_COPY_BYTES`` = (bytes per training
  value, bytes per validation value): logistic, one float32 standardised copy of train
  (validation is scored in chunks); ridge, float64 standardised train and validation copies
  plus, with more columns than rows, the float64 D x N dual basis; the minibatch softmax
  probe and streaming ridge, none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# The encoders (torch) are imported where an estimate is made: `ptransfer plan` imports this
# module for every sweep, and most of its cells have no one-hot features to estimate.
if TYPE_CHECKING:
    from ptransfer.cell.spec import CellSpec
    from ptransfer.encoders.base import Encoder
    from ptransfer.tasks.base import Task

log = logging.getLogger(__name__)

FEATURE_BYTES = 4  # float32
PROBE_COPY_BYTES = {"logistic": (4, 0), "ridge": (16, 8), "linear": (0, 0), "streaming": (0, 0)}
MAX_LEN_KEY = "model.max_len"
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class MemoryEstimate:
    """Feature width and bytes of one cell's in-memory features and probe copies."""

    width: int  # features per row
    n_layers: int
    rows: int  # rows of every split together (proteins, or residues per residue)
    train_rows: int
    padded_len: int | None  # per-protein one-hot: residues per row after padding / capping
    longest: int  # the task's longest sequence
    held_bytes: float
    probe_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.held_bytes + self.probe_bytes

    def describe(self) -> str:
        """One line: width, rows and the estimate."""
        shape = (f"20 x {self.padded_len:,} = {self.width:,} columns per protein (padded to "
                 f"{'the longest sequence' if self.padded_len == self.longest else MAX_LEN_KEY}"
                 f", longest {self.longest:,} residues)"
                 if self.padded_len is not None else f"{self.width:,} columns")
        return (f"one-hot features: {shape}, {self.rows:,} rows x {self.n_layers} layer(s): "
                f"~{_gb(self.total_bytes)} ({_gb(self.held_bytes)} features + "
                f"{_gb(self.probe_bytes)} probe working copy)")


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB"


def onehot_memory(task: Task, encoder: Encoder, head: str) -> MemoryEstimate | None:
    """Estimate for an encoder whose features the cell keeps in memory (flatten pooling:
    one-hot); None for encoders read layer by layer from the embedding store."""
    from ptransfer.encoders.onehot import padded_length

    if encoder.pooling != "flatten":
        return None
    lengths = [len(s) for s in task.all_sequences()]
    longest = max(lengths, default=0)
    train = task.splits["train"]
    if task.level == "protein":
        padded = padded_length(lengths, encoder.max_len)
        width = padded * encoder.dim
        rows = sum(len(split.sequences) for split in task.splits.values())
        train_rows, val_rows = len(train.sequences), len(task.splits["val"].sequences)
    else:
        padded, width = None, encoder.dim
        rows = sum(split.n_residues() for split in task.splits.values())
        train_rows, val_rows = train.n_residues(), task.splits["val"].n_residues()
    held = float(encoder.n_layers) * rows * width * FEATURE_BYTES
    per_train, per_val = PROBE_COPY_BYTES.get(head, (FEATURE_BYTES, FEATURE_BYTES))
    probe = float(width) * (train_rows * per_train + val_rows * per_val)
    return MemoryEstimate(width, encoder.n_layers, rows, train_rows, padded, longest,
                          held, probe)


def available_bytes() -> float | None:
    """``MemAvailable`` of /proc/meminfo in bytes (None where the kernel does not say)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024  # the field is in kB
    except OSError:
        return None
    return None


def max_len_that_fits(estimate: MemoryEstimate, budget: float) -> int:
    """The largest padding length whose per-protein estimate stays within ``budget`` bytes."""
    per_residue = estimate.total_bytes / max(estimate.padded_len or 1, 1)
    return max(1, int(budget // per_residue))


def check_memory(task: Task, encoder: Encoder, head: str) -> MemoryEstimate | None:
    """Log the one-hot width and estimate; raise ``MemoryError`` when it cannot fit.

    Called by the cell before any feature is built, so a refused cell costs nothing.
    """
    estimate = onehot_memory(task, encoder, head)
    if estimate is None:
        return None
    free = available_bytes()
    log.info("%s; %s available", estimate.describe(),
             _gb(free) if free is not None else "unknown memory")
    if free is None or estimate.total_bytes <= free:
        return estimate
    hint = (f"set {MAX_LEN_KEY}=N to pad (and truncate) per-protein one-hot to N residues; "
            f"{MAX_LEN_KEY}={max_len_that_fits(estimate, free)} would fit"
            if estimate.padded_len is not None else "subsample the task (subsample={train: N})")
    raise MemoryError(f"{estimate.describe()}, but only {_gb(free)} of memory is available; "
                      f"{hint}")


def plan_memory(spec: CellSpec) -> str | None:
    """``ptransfer plan``'s memory line for one cell: the estimate for in-memory (one-hot)
    features, None for store-backed encoders. The width depends on the task's longest
    sequence, so the task is loaded (``task_data.load_task``: the task the cell's key has
    just fingerprinted is reused, not loaded again)."""
    from ptransfer.cell.encoder import build_encoder
    from ptransfer.cell.task_data import load_task
    from ptransfer.heads.fit_layers import resolve_head

    if spec.encoder.family != "onehot":
        return None
    try:
        task = load_task(spec.task, spec.results_dir)
        encoder = build_encoder(spec.encoder)
        head = resolve_head(spec.head, task)
    except Exception as err:  # noqa: BLE001 - plan reports, the cell itself will fail clearly
        while err.__cause__ is not None:  # Hydra wraps errors raised by a _target_
            err = err.__cause__
        first = (str(err).splitlines() or [""])[0]
        return f"one-hot features: not estimated (task {spec.task.name}: {first})"
    estimate = onehot_memory(task, encoder, head)
    if estimate is None:
        return None
    free = available_bytes()
    fits = "" if free is None or estimate.total_bytes <= free else (
        f"; MORE than the {_gb(free)} available: the cell will refuse; set "
        f"{MAX_LEN_KEY}={max_len_that_fits(estimate, free)} or lower")
    return estimate.describe() + fits
