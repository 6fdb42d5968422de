"""Which device a job computes on: one GPU per concurrent job, from a pool of per-host slots.

With ``extract.device=auto`` (the default) a job that wants a GPU takes a *slot* of this
host's pool when it is about to compute and keeps it until it ends:

- the pool is the GPUs the process sees (``torch.cuda.device_count()``; a Slurm job sees the
  GPUs of its allocation through ``CUDA_VISIBLE_DEVICES``), or a simulated pool of N
  (``PTRANSFER_FAKE_GPUS=N``: jobs get the names ``cuda:0`` ... ``cuda:N-1`` and compute on
  the CPU; for tests and for trying a sweep's scheduling without GPUs);
- each GPU has ``extract.jobs_per_gpu`` slots (default 1: never two jobs on one GPU unless
  asked); a slot is held through a claim file (``embed.claims``: created atomically, broken
  when its process is gone) ``<pool>/<host>/<gpu>.<slot>.claim``, where ``<gpu>`` is the
  physical id (the ``CUDA_VISIBLE_DEVICES`` entry), so jobs of several sweeps or Slurm
  allocations on one node never share a GPU by accident. The pool is one per host, outside
  any results folder, so every sweep on the host shares it whatever its ``results_dir``:
  ``$PTRANSFER_DEVICES_DIR`` when set (a folder every user of the GPUs can write), else
  ``<temp dir>/ptransfer-<user>/devices``;
- a free slot is taken in the order they were last released (every GPU gets work before any
  gets a second job); when all are held the job waits for one.

``extract.device=cuda:K`` or ``cpu`` is used as given (no pool). The device a job got is
logged and written to its status (``status.json`` of a cell, ``job_status.json`` of a
shard job). A shard job takes its slot only after claiming its shard (``sweep.shard_job``):
no job holds a GPU while it waits for another writer.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from ptransfer.cell.config_values import FAKE_GPUS_ENV, fake_gpu_count
from ptransfer.embed.claims import Claim

log = logging.getLogger(__name__)

DEVICES_ENV = "PTRANSFER_DEVICES_DIR"
POLL_S = 1.0


@dataclass
class DeviceLease:
    """A device held by this job: ``name`` (logged, recorded), ``torch_device`` (used)."""

    name: str
    torch_device: str
    claim: Claim | None = None
    simulated: bool = False
    acquired: float = field(default_factory=time.time)

    def record(self) -> dict:
        """What a job's status records of its device: name and the time it was held from."""
        return {"device": self.name, "device_from": self.acquired}

    def release(self) -> None:
        if self.claim is not None and self.claim.held:
            self.claim.release()
            released = self.claim.path.with_suffix(".released")
            released.write_text(str(time.time()))  # its age orders the free slots

    def describe(self) -> str:
        if self.simulated:
            return f"{self.name} (simulated by {FAKE_GPUS_ENV}; computing on the CPU)"
        return self.name

    def __enter__(self) -> DeviceLease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def gpu_pool() -> tuple[list[str], bool]:
    """(physical ids of the GPUs this process may use, simulated?)."""
    fake = fake_gpu_count()
    if fake is not None:
        return [f"fake{k}" for k in range(fake)], True
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if v.strip()]
    return [visible[k] if k < len(visible) else str(k) for k in range(count)], False


def devices_dir() -> Path:
    """The host's GPU pool folder (see the module docstring)."""
    configured = os.environ.get(DEVICES_ENV, "").strip()
    if configured:
        return Path(configured).absolute()
    import getpass
    import tempfile

    return Path(tempfile.gettempdir()) / f"ptransfer-{getpass.getuser()}" / "devices"


def acquire_device(cfg: DictConfig, wants_gpu: bool = True, what: str = "job") -> DeviceLease:
    """The device of a job (see the module docstring); the caller releases the lease."""
    asked = str(cfg.extract.get("device", "auto"))
    if asked != "auto":
        return DeviceLease(asked, asked)  # checked where it is used (cell.encoder.pick_device)
    if not wants_gpu:
        return DeviceLease("cpu", "cpu")
    pool, simulated = gpu_pool()
    if not pool:
        return DeviceLease("cpu", "cpu")
    per_gpu = int(cfg.extract.get("jobs_per_gpu", 1))  # >= 1: config_values.check_extract
    folder = devices_dir() / socket.gethostname()
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index, slot in _free_slots(folder, pool, per_gpu):
            claim = Claim(folder / f"{pool[index]}.{slot}.claim", what=what)
            if claim.try_acquire():
                device = f"cuda:{index}"
                return DeviceLease(device, "cpu" if simulated else device, claim, simulated)
        if not waited:
            log.info("every GPU slot of this host is taken (%d GPU(s) x %d job(s) each): "
                     "waiting for one", len(pool), per_gpu)
            waited = True
        time.sleep(POLL_S)


def _free_slots(folder: Path, pool: list[str], per_gpu: int) -> list[tuple[int, int]]:
    """(GPU index, slot) without a claim file, least recently released first."""
    free = []
    for slot in range(per_gpu):
        for index, gpu in enumerate(pool):
            if (folder / f"{gpu}.{slot}.claim").exists():
                continue  # held, or stale: try_acquire breaks stale claims when it is tried
            released = folder / f"{gpu}.{slot}.released"
            age = released.stat().st_mtime if released.exists() else 0.0
            free.append((slot, age, index))
    held_stale = [(slot, 0.0, index) for slot in range(per_gpu)
                  for index, gpu in enumerate(pool)
                  if (folder / f"{gpu}.{slot}.claim").exists()]
    order = sorted(free, key=lambda t: (t[0], t[1], t[2])) + held_stale
    return [(index, slot) for slot, _, index in order]
