"""``FineTuner``: fine-tune a loaded encoder on a task, predict every eval set.

scikit-learn style: ``__init__`` stores the settings, ``fit(encoder, task)`` trains and
returns self; learned state ends in ``_``:

- ``predictions_``: eval set (``val`` and every test set) -> predictions in the order of
  the split's labelled targets (``targets_``): regression values (N) or class
  probabilities (N x C, columns = class indices);
- ``selected_params_``: ``{"lr", "epoch"}``: the learning rate whose best validation value
  is best, and that run's best epoch (both chosen on validation only);
- ``history_``: per learning rate, every epoch's mean train loss and validation value;
- ``n_trainable_`` (head included), ``n_trainable_backbone_`` and, for LoRA, ``peft_model_``
  (PEFT's wrapper: ``get_nb_trainable_parameters()`` counts the adapters).

Every learning rate starts from the same weights (the loaded model with fresh adapters and
head, seeded by ``seed``). Seeded and deterministic on the CPU: the same seed gives the same
predictions, bit for bit. ``checkpoint``: the progress file (a fine-tune cell's is in its folder), written
after every epoch; a killed fit re-run with it resumes from the last finished epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ptransfer.embed.batching import Batching
from ptransfer.embed.extract import check_length_policy
from ptransfer.metrics import HIGHER_IS_BETTER, score
from ptransfer.tasks.base import Task
from ptransfer.tune.adapt import adapt, check_encoder, trainable_parameters
from ptransfer.tune.checkpoint import (
    load_progress,
    restore_state,
    save_progress,
    trainable_state,
)
from ptransfer.tune.data import (
    TargetScale,
    batch_targets,
    in_split_order,
    labelled_targets,
    make_batches,
    to_predictions,
)
from ptransfer.tune.network import TuneNetwork
from ptransfer.tune.spec import KEY, TuneSpec
from ptransfer.tune.train import Context, improved, predict, run_lr

log = logging.getLogger(__name__)


class FineTuner:
    """Fine-tune ``spec.mode`` (lora | full) with a fresh MLP head; see the module docstring.

    Args:
        spec: the fine-tuning settings.
        seed: seeds adapters, head, data order and dropout.
        pretrained: whether the weights carry pretraining (``ablation=pretrained``); False
            (random_init, stat_transfer) picks the from-scratch learning-rate grid.
        device: ``cpu``, ``cuda``, ``cuda:1`` ... (the encoder is moved there).
        checkpoint: the progress file, or None (no resume).
        progress: show a tqdm bar per epoch.
    """

    def __init__(self, spec: TuneSpec, seed: int = 0, pretrained: bool = True,
                 device: str = "cpu", checkpoint: str | Path | None = None,
                 progress: bool = True) -> None:
        self.spec = spec
        self.seed = seed
        self.pretrained = pretrained
        self.device = device
        self.checkpoint = checkpoint
        self.progress = progress

    def _identity(self, encoder, task: Task) -> dict:
        return {"spec": self.spec.as_dict(), "seed": int(self.seed),
                "pretrained": bool(self.pretrained), "model": encoder.name,
                "task": task.fingerprint()}

    def fit(self, encoder, task: Task) -> FineTuner:
        """Fine-tune ``encoder`` (loaded) on ``task``'s train split, select on val, predict."""
        check_encoder(encoder, self.spec)
        if task.level == "residue" and task.kind != "classification":
            raise ValueError(f"task {task.name!r}: per-residue regression is not supported "
                             f"by {KEY}={self.spec.mode}")
        path = Path(self.checkpoint) if self.checkpoint is not None else None
        identity = self._identity(encoder, task)
        progress = load_progress(path, identity) or {"identity": identity, "runs": [],
                                                     "current": None}
        if not progress.get("finished"):
            self._train(encoder, task, progress, path)
        self._select(task, progress)
        return self

    def _context(self) -> Context:
        device = torch.device(self.device)
        precision = self.spec.precision
        bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
        return Context(device, torch.bfloat16 if bf16 else None, self.progress,
                       f"{self.spec.mode}")

    def _train(self, encoder, task: Task, progress: dict, path: Path | None) -> None:
        spec, context = self.spec, self._context()
        batching = Batching(spec.toks_per_batch, encoder.max_len, spec.length_policy)
        check_length_policy(encoder, task.all_sequences(), spec.length_policy, task.level)
        scale = (TargetScale.of(task.splits["train"].targets) if task.kind == "regression"
                 else TargetScale())
        batches = {name: make_batches(split, batching) for name, split in task.splits.items()}
        train = task.splits["train"]
        targets = [batch_targets(b, train, task.level, task.kind, scale)
                   for b in batches["train"]]
        devices = [context.device.index or 0] if context.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            network = self._network(encoder, task, context)
            initial = trainable_state(network)

            def outputs(name: str) -> torch.Tensor:
                per_batch = predict(network, batches[name], context)
                ordered = in_split_order(per_batch, batches[name], task.splits[name],
                                         task.level)
                return torch.as_tensor(to_predictions(ordered, task.kind, scale))

            y_val = labelled_targets(task.splits["val"], task.level)
            rates = spec.learning_rates_for(self.pretrained)
            for run, lr in enumerate(rates):
                if run < len(progress["runs"]):
                    continue  # finished before a restart
                resume = progress["current"] if (progress["current"] or {}).get("run") == run \
                    else None
                if resume is None:
                    restore_state(network, initial)

                def save(state: dict) -> None:
                    progress["current"] = state
                    if path is not None:
                        save_progress(path, progress)

                summary = run_lr(network, lr, run, self.seed, spec,
                                 (batches["train"], targets),
                                 lambda: score(task.metric, y_val, outputs("val").numpy()),
                                 HIGHER_IS_BETTER[task.metric], task.kind, context, resume,
                                 save)
                summary["outputs"] = {name: outputs(name) for name in ["val", *task.test_sets]}
                progress["runs"].append(summary)
                progress["current"] = None
                if path is not None:
                    save_progress(path, progress)
        progress.update(finished=True, n_trainable=self.n_trainable_,
                        n_trainable_backbone=self.n_trainable_backbone_)
        if path is not None:
            save_progress(path, progress)  # outputs only: the weights are dropped

    def _network(self, encoder, task: Task, context: Context) -> TuneNetwork:
        """Adapters (seeded) and head (seeded) on ``encoder``, moved to the device."""
        self.peft_model_ = adapt(encoder, self.spec, self.seed)
        self.n_trainable_backbone_ = trainable_parameters(encoder.loaded_module())
        torch.manual_seed(int(self.seed))
        n_out = 1 if task.kind == "regression" else int(task.n_classes or 0)
        if n_out < 1:
            raise ValueError(f"task {task.name!r}: classification without classes")
        network = TuneNetwork(encoder, task.level, n_out, self.spec.head_dropout)
        encoder.to(context.device)
        network.to(context.device)
        self.n_trainable_ = trainable_parameters(network)
        return network

    def _select(self, task: Task, progress: dict) -> None:
        """The run with the best validation value (the first on ties) gives the outputs."""
        higher = HIGHER_IS_BETTER[task.metric]
        best = None
        for run in progress["runs"]:
            if best is None or improved(run["best_value"], best["best_value"], higher):
                best = run
        self.selected_params_ = {"lr": float(best["lr"]), "epoch": int(best["best_epoch"])}
        self.predictions_ = {name: np.asarray(values.numpy())
                             for name, values in best["outputs"].items()}
        self.targets_ = {name: labelled_targets(task.splits[name], task.level)
                         for name in self.predictions_}
        self.history_ = [{k: run[k] for k in ("lr", "best_epoch", "best_value", "history")}
                         for run in progress["runs"]]
        self.n_trainable_ = int(progress.get("n_trainable", getattr(self, "n_trainable_", 0)))
        self.n_trainable_backbone_ = int(progress.get(
            "n_trainable_backbone", getattr(self, "n_trainable_backbone_", 0)))
