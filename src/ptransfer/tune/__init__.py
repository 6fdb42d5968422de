"""Fine-tuning: a model's weights trained on a task (LoRA through PEFT, or every weight),
with a small MLP head on its last layer; the counterpart of the frozen probes (``heads``).

- ``spec``: ``TuneSpec``, the typed ``tune`` config (mode, LoRA rank/alpha/dropout, the
  learning-rate grid, epochs and patience, token budget, accumulation, precision).
- ``targets``: LoRA's target modules per architecture (``LORA_TARGETS``) and which models
  can be fine-tuned at all (``check_tunable``; torch-free, for config checks and sweeps).
- ``adapt``: which weights train: LoRA adapters (PEFT) on those projections, or all of them;
  optional gradient checkpointing per block.
- ``network``: the encoder's differentiable last-layer forward per residue
  (``ModuleEncoder.forward_layers``, the forward ``embed`` uses), windows averaged, and the
  per-protein (masked mean pool) or per-residue MLP head.
- ``data``: splits as token-budget batches (extraction's ``batch_units``), targets, outputs
  back in the split's labelled-row order.
- ``train``: one learning rate: AdamW epochs, accumulation, bf16 autocast on CUDA, early
  stopping on the task's validation metric, best epoch restored.
- ``checkpoint``: the progress file, atomically replaced after every epoch (resume).
- ``finetune``: ``FineTuner``, the estimator: learning rates chosen on validation, the eval
  sets predicted.
- ``estimate``: memory and time a fine-tune needs (for planning, no torch).

Imports: encoders, embed, tasks, metrics; nothing below imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TuneSpec": "ptransfer.tune.spec",
    "MODES": "ptransfer.tune.spec",
    "FineTuner": "ptransfer.tune.finetune",
    "LORA_TARGETS": "ptransfer.tune.targets",
    "check_tunable": "ptransfer.tune.targets",
    "estimate_tune": "ptransfer.tune.estimate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
