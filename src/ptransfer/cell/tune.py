"""A fine-tune cell (``tune=lora|full``): the model trained on the task, one row set at its
last layer, in the frozen cells' schema.

The cell loads its model (ablation applied, seeded), reads no embedding store, and hands it
to ``tune.FineTuner``; the predictions of every eval set become one ``LayerFit`` at the
encoder's last layer, scored with the task's metrics like a probe's, so ``rows.csv`` and
``predictions.parquet`` are written by the frozen cells' own code (``head`` = ``mlp``,
``head_config`` = the hash of the tune settings, ``tune`` = the mode). The fine-tune's progress
file lives in the cell's folder (``PROGRESS_FILE``): a killed cell re-run resumes from its last
finished epoch; the cell removes it once its status says done.

Memory: before loading, the cell estimates what the fine-tune needs (``tune.estimate``:
weights, gradients and AdamW state, activations of the largest batch) and refuses, naming the
settings that shrink it, when the device (the GPU, or the CPU's available memory) has less.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ptransfer.cell.memory import available_bytes
from ptransfer.cell.spec import CellSpec
from ptransfer.embed.shards import sequence_tokens
from ptransfer.tune.estimate import TuneEstimate, estimate_tune

if TYPE_CHECKING:
    from ptransfer.encoders.base import Encoder
    from ptransfer.heads.fit_layers import LayerFit
    from ptransfer.tasks.base import Task

log = logging.getLogger(__name__)

PROGRESS_FILE = "tune_progress.pt"
PLANNING_TFLOPS = 100.0  # the sweep plan's rate (sweep.jobs.EFFECTIVE_TFLOPS), for log lines


def tune_estimate(spec: CellSpec, sequences_by_split: dict[str, list[str]],
                  device: str = "cuda") -> TuneEstimate:
    """The fine-tune's memory and time estimate from the task's sequences per split, on
    ``device`` (``tune.precision=auto``: bf16 autocast on CUDA, fp32 elsewhere)."""
    tune, config = spec.tune, spec.encoder.config
    tokens = {name: sum(sequence_tokens(s) for s in seqs)
              for name, seqs in sequences_by_split.items()}
    tests = sum(t for name, t in tokens.items() if name not in ("train", "val"))
    longest = max((len(s) for seqs in sequences_by_split.values() for s in seqs), default=0)
    max_len = config.get("max_len") or longest
    batch = max(tune.toks_per_batch, min(longest, max_len) + 2)  # a long one rides alone
    pretrained = spec.encoder.ablation == "pretrained"
    return estimate_tune(
        tune.mode, int(config["n_params"]), int(config["n_blocks"]), int(config["dim"]), batch,
        tokens.get("train", 0), tokens.get("val", 0), tests,
        len(tune.learning_rates_for(pretrained)), tune.max_epochs, tune.lora_r,
        bf16=tune.precision == "bf16" or (tune.precision == "auto"
                                          and str(device).startswith("cuda")),
        gradient_checkpointing=tune.gradient_checkpointing)


def device_memory(device: str) -> float | None:
    """Bytes the fine-tune may use on ``device``: the GPU's free memory, or the CPU's
    available memory (None: unknown)."""
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return float(free)
    return available_bytes()


def check_tune_memory(spec: CellSpec, task: Task, device: str) -> TuneEstimate:
    """Log the estimate; raise ``MemoryError`` when ``device`` cannot hold it."""
    estimate = tune_estimate(spec, {n: s.sequences for n, s in task.splits.items()}, device)
    free = device_memory(device)
    log.info("%s; up to ~%s at %.0f effective TFLOP/s; %s available on %s",
             estimate.describe(), _duration(estimate.seconds(PLANNING_TFLOPS)),
             PLANNING_TFLOPS, f"{free / 1e9:.2f} GB" if free is not None else "unknown memory",
             device)
    if free is not None and estimate.total_bytes > free:
        raise MemoryError(f"{estimate.describe()}, but only {free / 1e9:.2f} GB is free on "
                          f"{device}; lower tune.toks_per_batch (with tune.accumulate to keep "
                          f"the batch), set tune.gradient_checkpointing=true, or use tune=lora")
    return estimate


def plan_tune(spec: CellSpec, tflops: float) -> tuple[str, float | None]:
    """``ptransfer plan``'s line for a fine-tune cell and its GPU seconds (None: the task
    could not be loaded). The estimate assumes a GPU (bf16 under ``tune.precision=auto``);
    where one is visible the line says whether the cell will refuse."""
    from ptransfer.cell.task_data import load_task

    try:
        task = load_task(spec.task, spec.results_dir)
    except Exception as err:  # noqa: BLE001 - plan reports, the cell itself will fail clearly
        while err.__cause__ is not None:
            err = err.__cause__
        return (f"fine-tune: not estimated (task {spec.task.name}: "
                f"{(str(err).splitlines() or [''])[0]})", None)
    estimate = tune_estimate(spec, {n: s.sequences for n, s in task.splits.items()}, "cuda")
    seconds = estimate.seconds(tflops)
    line = f"{estimate.describe()}, up to ~{_duration(seconds)} at {tflops:.0f} effective TFLOP/s"
    free = _largest_gpu()
    if free is not None and estimate.total_bytes > free:
        line += (f"; MORE than the {free / 1e9:.1f} GB of this machine's largest GPU: the "
                 f"cell will refuse (tune.toks_per_batch, tune.gradient_checkpointing, tune=lora)")
    return line, seconds


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} GPU-min" if seconds < 3600 else f"{seconds / 3600:.2f} GPU-h"


def _largest_gpu() -> float | None:
    """Total memory of the largest visible GPU (None: none visible, or torch absent)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return float(max(torch.cuda.get_device_properties(i).total_memory
                         for i in range(torch.cuda.device_count())))
    except Exception:  # noqa: BLE001 - planning never fails on a device query
        return None


def tune_fit(spec: CellSpec, task: Task, encoder: Encoder, device: str, cell_dir) -> LayerFit:
    """Fine-tune the loaded ``encoder`` on ``task``; its predictions as the last layer's fit."""
    from ptransfer.heads.fit_layers import (
        EvalPredictions,
        LayerFit,
        row_index,
        score_all,
        task_metrics,
    )
    from ptransfer.tune.finetune import FineTuner

    tuner = FineTuner(spec.tune, seed=spec.seed, pretrained=spec.encoder.ablation == "pretrained",
                      device=device, checkpoint=cell_dir / PROGRESS_FILE,
                      progress=spec.extract.progress)
    tuner.fit(encoder, task)
    log.info("fine-tuned (%s): %d trainable parameters; chosen on validation: %s",
             spec.tune.mode, tuner.n_trainable_, tuner.selected_params_)
    scores, n_eval, predictions = {}, {}, {}
    for eval_set, pred in tuner.predictions_.items():
        y = tuner.targets_[eval_set]
        scores[eval_set] = score_all(task, y, pred)
        n_eval[eval_set] = int(len(y))
        rows, positions = row_index(task, eval_set)
        if task.kind == "regression":
            predictions[eval_set] = EvalPredictions(rows, positions, y, pred)
        else:
            keep = "roc_auc" in task_metrics(task)
            predictions[eval_set] = EvalPredictions(rows, positions, y,
                                                    np.argmax(pred, axis=1),
                                                    pred if keep else None)
    n_train = int(np.sum(task.splits["train"].flat_targets() >= 0)) if task.level == "residue" \
        else len(task.splits["train"])
    return LayerFit(encoder.n_layers - 1, dict(tuner.selected_params_), scores, n_train,
                    n_eval, predictions)
