"""One learning-rate run: AdamW epochs, early stopping on validation, best epoch restored.

Each epoch visits the training batches in an order drawn from (seed, run, epoch) and
re-seeds torch's RNG (dropout) from the same triple, so an epoch's updates depend only on
the state at its start: a run resumed from its last epoch checkpoint is the run that was
not interrupted. ``accumulate`` forwards make one optimizer step; each forward's summed loss
is divided by the labelled items of the whole step, so accumulation equals one larger batch.
After each epoch the task's main metric is computed on validation; ``patience`` epochs
without improvement end the run, and the best epoch's weights are restored before the
eval sets are predicted. A NaN validation value (constant predictions) counts as the worst.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ptransfer.tasks.base import IGNORE
from ptransfer.tune.checkpoint import restore_state, trainable_state
from ptransfer.tune.network import Batch, TuneNetwork
from ptransfer.tune.spec import TuneSpec


@dataclass
class Context:
    """Where and how a run computes: device, autocast dtype (None: fp32), progress bars."""

    device: torch.device
    autocast: torch.dtype | None = None
    progress: bool = True
    label: str = ""

    def autocast_context(self):
        return torch.autocast(self.device.type, dtype=self.autocast,
                              enabled=self.autocast is not None)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence: stable across platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def batch_loss(outputs: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Summed loss of a forward: squared error (regression) or cross-entropy (classes)."""
    outputs = outputs.float()
    if kind == "regression":
        return ((outputs[:, 0] - targets) ** 2).sum()
    return F.cross_entropy(outputs, targets, ignore_index=IGNORE, reduction="sum")


def n_items(targets: torch.Tensor, kind: str) -> int:
    return int(len(targets)) if kind == "regression" else int((targets != IGNORE).sum())


@torch.no_grad()
def predict(network: TuneNetwork, batches: list[Batch], context: Context) -> list[torch.Tensor]:
    """Network outputs per batch (eval mode), float32 on the CPU."""
    network.eval()
    outputs = []
    for batch in batches:
        with context.autocast_context():
            outputs.append(network(batch).float().cpu())
    return outputs


def train_epoch(network: TuneNetwork, optimizer: torch.optim.Optimizer, batches: list[Batch],
                targets: list[torch.Tensor], kind: str, spec: TuneSpec, lr: float,
                order: list[int], step: int, context: Context, desc: str) -> tuple[float, int]:
    """One pass over ``batches`` in ``order``; returns (mean loss per item, optimizer steps)."""
    network.train()
    trainable = [p for p in network.parameters() if p.requires_grad]
    total, count = 0.0, 0
    bar = tqdm(total=len(order), desc=desc, disable=not context.progress, leave=False)
    for start in range(0, len(order), spec.accumulate):
        chunk = order[start:start + spec.accumulate]
        items = sum(n_items(targets[i], kind) for i in chunk)
        for index in chunk:
            target = targets[index].to(context.device)
            with context.autocast_context():
                outputs = network(batches[index])
            loss = batch_loss(outputs, target, kind)
            (loss / max(items, 1)).backward()
            total, count = total + float(loss.detach()), count + n_items(targets[index], kind)
            bar.update(1)
        if spec.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, spec.max_grad_norm)
        warmup = min(1.0, (step + 1) / spec.warmup_steps) if spec.warmup_steps else 1.0
        for group in optimizer.param_groups:
            group["lr"] = lr * warmup
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.set_postfix(loss=f"{total / max(count, 1):.4g}")
    bar.close()
    return total / max(count, 1), step


def improved(value: float, best: float | None, higher_is_better: bool) -> bool:
    """Whether ``value`` beats ``best`` (None: nothing yet); NaN never beats a number."""
    if best is None or (math.isnan(best) and not math.isnan(value)):
        return True
    if math.isnan(value):
        return False
    return value > best if higher_is_better else value < best


def run_lr(network: TuneNetwork, lr: float, run: int, seed: int, spec: TuneSpec,
           train: tuple[list[Batch], list[torch.Tensor]], validate: Callable[[], float],
           higher_is_better: bool, kind: str, context: Context, resume: dict | None,
           save: Callable[[dict], None]) -> dict:
    """Train one learning rate from the network's current (initial) weights, or from
    ``resume`` (a saved run state); ``save`` is called with the run state after every epoch.
    Ends with the best-validation epoch's weights in ``network``; returns the run's summary
    (lr, best_epoch, best_value, history)."""
    batches, targets = train
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=spec.weight_decay)
    state = {"run": run, "lr": lr, "epoch": 0, "step": 0, "best_epoch": 0, "best_value": None,
             "bad_epochs": 0, "history": [], "best_state": trainable_state(network)}
    if resume is not None:
        restore_state(network, resume["state"])
        optimizer.load_state_dict(resume["optimizer"])
        state.update({k: v for k, v in resume.items() if k not in ("state", "optimizer")})
    while state["epoch"] < spec.max_epochs and state["bad_epochs"] < spec.patience:
        epoch = state["epoch"] + 1
        epoch_seed = derived_seed(seed, run, epoch)
        torch.manual_seed(epoch_seed)
        order = np.random.default_rng(epoch_seed).permutation(len(batches)).tolist()
        desc = f"{context.label} lr={lr:g} epoch {epoch}/{spec.max_epochs}"
        loss, state["step"] = train_epoch(network, optimizer, batches, targets, kind, spec, lr,
                                          order, state["step"], context, desc)
        value = float(validate())
        state["history"].append({"epoch": epoch, "train_loss": loss, "val": value})
        if improved(value, state["best_value"], higher_is_better):
            state.update(best_epoch=epoch, best_value=value, bad_epochs=0,
                         best_state=trainable_state(network))
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        save({**state, "state": trainable_state(network), "optimizer": optimizer.state_dict()})
    restore_state(network, state["best_state"])
    return {k: state[k] for k in ("lr", "best_epoch", "best_value", "history")}
