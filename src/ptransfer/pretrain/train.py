"""``ptransfer pretrain``: masked-LM pretraining of a small ESM-2 or CARP, with checkpoints.

This produces the checkpoint axis of the grid on any machine: the model is trained from its
initialisation (step 0) and saved at configured steps in its package's own checkpoint format,
so ``model.weights=<file>`` and ``checkpoint=step<N>`` load it exactly like released weights.

Outputs in ``out_dir``: one checkpoint per configured step (``esm2_<tag>_step<N>.pt`` plus
its ``-contact-regression.pt``, or ``<tag>_step<N>.pt`` for CARP), ``manifest.csv`` (step,
tokens_seen, train_loss, val_loss, val_perplexity, path, seconds), ``model.yaml`` (a model
config for the grid listing the checkpoints) and ``last.pt`` (the full training state,
written atomically at every checkpoint and every ``schedule.save_every`` steps). Re-running
the same command resumes from ``last.pt``; a finished run does nothing.

Reproducibility: the epoch's crops and batch order come from ``(seed, epoch)``, a step's
masking from ``(seed, step)``, so a resumed run ends bit-identical to an uninterrupted one
(on the same device and thread count). Validation masking uses the fixed ``mlm.val_seed``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ptransfer.pretrain.adapters import make_adapter
from ptransfer.pretrain.corpus import PretrainData, load_pretrain_data
from ptransfer.pretrain.mlm import (
    IGNORE_INDEX,
    MaskingRates,
    crop,
    mask_tokens,
    mlm_loss,
    token_budget_batches,
)
from ptransfer.pretrain.outputs import write_manifest, write_model_config
from ptransfer.pretrain.settings import check_pretrain_values, pick_device

log = logging.getLogger(__name__)

STATE_FILE = "last.pt"
MANIFEST_FILE = "manifest.csv"
MODEL_FILE = "model.yaml"
# Config keys that change no number of the run: left out of its fingerprint.
_UNFINGERPRINTED = {"data": ("root", "task_conf_dir"), "schedule": ("save_every",)}


class WarmupDecay:
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine or linear decay
    to ``min_ratio`` at ``max_steps``. A callable object (not a lambda) so that LambdaLR
    saves it in its state dict."""

    def __init__(self, warmup_steps: int, max_steps: int, decay: str, min_ratio: float) -> None:
        if decay not in ("cosine", "linear"):
            raise ValueError(f"schedule.decay={decay!r}: expected cosine or linear")
        self.warmup_steps = warmup_steps
        self.max_steps = max_steps
        self.decay = decay
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if self.decay == "cosine" else 1 - progress
        return self.min_ratio + (1 - self.min_ratio) * shape


@dataclass
class Progress:
    """Where the run is; saved in ``last.pt`` so that a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0  # residues fed to the model (special tokens and padding excluded)
    loss_sum: float = 0.0  # training losses since the last checkpoint (running mean)
    loss_count: int = 0
    seconds: float = 0.0  # training wall time over all sessions
    manifest: list[dict] = field(default_factory=list)


def derived_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys, so (seed, step) streams never collide."""
    return int(np.random.SeedSequence(list(keys)).generate_state(2, np.uint64)[0] >> 1)


def checkpoint_steps(schedule: dict) -> list[int]:
    """Configured steps within ``max_steps``, plus ``max_steps`` itself (the final model)."""
    max_steps = int(schedule["max_steps"])
    wanted = sorted({int(s) for s in schedule["checkpoints"]})
    if any(s < 0 for s in wanted):
        raise ValueError(f"schedule.checkpoints: negative step in {wanted}")
    beyond = [s for s in wanted if s > max_steps]
    if beyond:
        log.warning("schedule.checkpoints: %d step(s) beyond max_steps=%d dropped: %s",
                    len(beyond), max_steps, beyond)
    return sorted({s for s in wanted if s <= max_steps} | {max_steps})


class Pretrainer:
    """One pretraining run: module, optimiser, schedule, data plan and checkpoint writer."""

    def __init__(self, cfg: dict, data: PretrainData, out_dir: Path) -> None:
        self.cfg, self.data, self.out_dir = cfg, data, out_dir
        self.arch, self.schedule = cfg["arch"], cfg["schedule"]
        self.seed = int(cfg["seed"])
        self.adapter = make_adapter(self.arch)
        self.rates = MaskingRates(float(cfg["mlm"]["select"]), float(cfg["mlm"]["to_mask"]),
                                  float(cfg["mlm"]["to_random"]))
        self.device, self.autocast_dtype = pick_device(str(cfg["device"]), str(cfg["precision"]))
        self.max_steps = int(self.schedule["max_steps"])
        self.steps_to_save = checkpoint_steps(self.schedule)
        self.fingerprint = run_fingerprint(cfg, data)
        _seed_everything(self.seed)  # the module's initialisation is step 0 of the run
        self.module = self.adapter.build().to(self.device)
        self.n_params = sum(p.numel() for p in self.module.parameters())
        self.optimizer = _adamw(self.module, self.schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, WarmupDecay(
            int(self.schedule["warmup_steps"]), self.max_steps, str(self.schedule["decay"]),
            float(self.schedule["min_lr_ratio"])))
        self.progress = Progress()
        self.val_batches = self._batches(data.val, rng=None)
        self._plan_epoch = -1
        self._session_start = time.perf_counter()
        self._seconds_at_start = 0.0

    # -- data -----------------------------------------------------------------------------
    def _batches(self, sequences: list[str], rng: np.random.Generator | None) -> list:
        lengths = np.array([len(s) for s in sequences])
        return token_budget_batches(lengths, int(self.schedule["toks_per_batch"]),
                                    self.adapter.n_special, rng,
                                    self.schedule.get("max_batch_size"))

    def next_batch(self) -> list[str]:
        """The next batch of cropped training sequences; a new epoch starts when one ends."""
        p = self.progress
        if self._plan_epoch != p.epoch:
            rng = np.random.default_rng([self.seed, p.epoch])
            self._crops = [crop(s, int(self.cfg["data"]["max_len"]), rng) for s in self.data.train]
            self._plan = self._batches(self._crops, rng)
            self._plan_epoch = p.epoch
        if p.batch_in_epoch >= len(self._plan):
            p.epoch, p.batch_in_epoch = p.epoch + 1, 0
            return self.next_batch()
        indices = self._plan[p.batch_in_epoch]
        p.batch_in_epoch += 1
        return [self._crops[i] for i in indices]

    # -- optimisation ---------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def masked_logits(self, sequences: list[str], generator: torch.Generator):
        """Mask a batch and run the module: (logits B x T x V, targets B x T, residues)."""
        tokens, maskable = self.adapter.tokenize(sequences)  # B x T each
        inputs, targets = mask_tokens(tokens, maskable, self.adapter.mask_idx,
                                      self.adapter.canonical_ids, self.rates, generator)
        with self._autocast():
            logits = self.adapter.logits(self.module, inputs.to(self.device))
        return logits, targets.to(self.device), int(maskable.sum())

    def train_step(self, sequences: list[str]) -> tuple[float, int]:
        """One optimiser update on a batch. Returns (loss, residues in the batch)."""
        self.module.train()
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.progress.step))
        logits, targets, n_residues = self.masked_logits(sequences, generator)
        loss = mlm_loss(logits, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss at step {self.progress.step} "
                f"(lr {self.scheduler.get_last_lr()[0]:.2e}): lower schedule.lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), float(self.schedule["clip_norm"]))
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), n_residues

    @torch.no_grad()
    def evaluate(self) -> float:
        """MLM loss on the held-out sequences, with masks fixed by ``mlm.val_seed``."""
        self.module.eval()
        total, count = 0.0, 0
        for i, indices in enumerate(self.val_batches):
            seed = derived_seed(int(self.cfg["mlm"]["val_seed"]), i)
            logits, targets, _ = self.masked_logits([self.data.val[j] for j in indices],
                                                    torch.Generator().manual_seed(seed))
            total += float(mlm_loss(logits, targets, reduction="sum"))
            count += int((targets != IGNORE_INDEX).sum())
        return total / count

    # -- the loop -------------------------------------------------------------------------
    def run(self, show_progress: bool = True) -> None:
        p = self.progress
        if p.step == 0 and 0 in self.steps_to_save and not p.manifest:
            self.checkpoint()
        bar = tqdm(total=self.max_steps, initial=p.step, disable=not show_progress,
                   desc=f"pretrain {self.arch['name']}", unit="step", dynamic_ncols=True)
        save_every = int(self.schedule.get("save_every") or 0)
        with bar:
            while p.step < self.max_steps:
                loss, n_residues = self.train_step(self.next_batch())
                p.step += 1
                p.tokens_seen += n_residues
                p.loss_sum += loss
                p.loss_count += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.1e}")
                if p.step in self.steps_to_save:
                    self.checkpoint()
                elif save_every and p.step % save_every == 0:
                    self.save_state()

    def elapsed(self) -> float:
        return self._seconds_at_start + time.perf_counter() - self._session_start

    def checkpoint(self) -> None:
        """Save the model at this step, add its manifest row, refresh model.yaml and last.pt."""
        p = self.progress
        val_loss = self.evaluate()
        train_loss = p.loss_sum / p.loss_count if p.loss_count else float("nan")
        path = self.out_dir / self.adapter.file_name(p.step)
        meta = {"step": p.step, "tokens_seen": p.tokens_seen, "val_loss": val_loss,
                "arch": dict(self.arch), "seed": self.seed}
        self.adapter.save(self.module, path, meta)
        p.manifest = [r for r in p.manifest if r["step"] != p.step] + [{
            "step": p.step, "tokens_seen": p.tokens_seen, "train_loss": train_loss,
            "val_loss": val_loss, "val_perplexity": math.exp(val_loss), "path": str(path),
            "seconds": round(self.elapsed(), 3),
        }]
        p.loss_sum, p.loss_count = 0.0, 0
        write_manifest(p.manifest, self.out_dir / MANIFEST_FILE)
        write_model_config(self, self.out_dir / MODEL_FILE)
        self.save_state()
        log.info("step %d: train loss %.4f, val loss %.4f (perplexity %.2f) -> %s",
                 p.step, train_loss, val_loss, math.exp(val_loss), path)

    # -- training state -------------------------------------------------------------------
    def save_state(self) -> None:
        self.progress.seconds = self.elapsed()
        state = {
            "fingerprint": self.fingerprint,
            "progress": asdict(self.progress),
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_states(),
        }
        tmp = self.out_dir / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out_dir / STATE_FILE)

    def restore(self, state: dict) -> None:
        """Continue from a saved state; refuses one written by a different configuration."""
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"{self.out_dir / STATE_FILE} belongs to a run with a different configuration "
                f"(differs in: {', '.join(_differing_keys(state['fingerprint'], self.fingerprint))}"
                "): use another out_dir, or delete the folder to start over")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = Progress(**state["progress"])
        self._seconds_at_start = self.progress.seconds
        self._session_start = time.perf_counter()
        _set_rng_states(state["rng"])


def _adamw(module: torch.nn.Module, schedule: dict) -> torch.optim.AdamW:
    """AdamW; matrices and embeddings decay, biases and LayerNorm gains do not."""
    decay = [p for p in module.parameters() if p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": float(schedule["weight_decay"])},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=float(schedule["lr"]),
                             betas=tuple(float(b) for b in schedule["betas"]))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def run_fingerprint(cfg: dict, data: PretrainData) -> dict:
    """Everything that changes the run's numbers: config sections plus the data's digest."""
    fingerprint = {key: dict(cfg[key]) for key in ("arch", "data", "mlm", "schedule")}
    for section, keys in _UNFINGERPRINTED.items():
        for key in keys:
            fingerprint[section].pop(key, None)
    fingerprint["seed"] = int(cfg["seed"])
    fingerprint["data_digest"] = data.digest
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


def _differing_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differing_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def run_pretrain(cfg: DictConfig) -> None:
    """Entry point of ``ptransfer pretrain``: train, or resume, or report a finished run."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    check_pretrain_values(plain)
    out_dir = Path(plain["out_dir"])
    if plain.get("cpu_threads"):
        torch.set_num_threads(int(plain["cpu_threads"]))  # CPU runs on a shared machine
    data = load_pretrain_data(plain["data"])
    trainer = Pretrainer(plain, data, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    if state_path.is_file():
        # our own training state (optimizer, RNG tuples): not a weights-only file. On the CPU:
        # RNG states must stay there; load_state_dict moves the rest to the module's device.
        trainer.restore(torch.load(state_path, map_location="cpu", weights_only=False))
        if trainer.progress.step >= trainer.max_steps:
            log.info("pretraining in %s is complete (step %d of %d, %d checkpoints): "
                     "nothing to do", out_dir, trainer.progress.step, trainer.max_steps,
                     len(trainer.progress.manifest))
            return
        log.info("resuming from %s at step %d of %d", state_path, trainer.progress.step,
                 trainer.max_steps)
    log.info("%s %s: %d parameters on %s (%s); %d train / %d val sequences; checkpoints at %s",
             trainer.adapter.family, trainer.arch["name"], trainer.n_params, trainer.device,
             "bf16 autocast" if trainer.autocast_dtype else "fp32", len(data.train),
             len(data.val), trainer.steps_to_save)
    trainer.run(show_progress=bool(plain.get("progress", True)))
    written = [str(out_dir / name) for name in (MANIFEST_FILE, MODEL_FILE)
               if (out_dir / name).is_file()]  # name only what is there
    log.info("pretraining done: %d checkpoints%s", len(trainer.progress.manifest),
             f"; wrote {', '.join(written)}" if written else "")
