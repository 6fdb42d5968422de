"""The typed fine-tuning config: ``TuneSpec``, built once from ``conf/tune/<mode>.yaml``.

Modes (``tune.mode``):

- ``frozen``: today's per-layer probes on stored features (``ptransfer.heads``); nothing here
  runs, and the tune settings never enter a frozen cell's key;
- ``lora``: low-rank adapters (PEFT) on the attention projections, base weights frozen;
- ``full``: every weight of the model trained.

Defaults, from the literature (docs/finetune.md has the sources):

- LoRA rank 8, alpha 16, dropout 0.05 (biotrainer; Schmirler et al. 2024 used r 4, alpha 1,
  lr 3e-4 -- both are one override away: ``tune.lora_r=4 tune.lora_alpha=1``);
- learning rates tried (AdamW, constant after ``warmup_steps``), the best chosen on
  validation only (``DEFAULT_LEARNING_RATES``): LoRA 3e-4 and 1e-3; full fine-tuning of
  pretrained weights 2e-5 and 1e-4 (small steps keep what pretraining learned); full
  fine-tuning of weights that carry no pretraining (``ablation=random_init`` or
  ``stat_transfer``: training from scratch) 1e-4 and 5e-4;
- epochs: at most ``max_epochs``; the epoch is chosen by early stopping on the task's main
  validation metric (``patience`` epochs without improvement), and that epoch's weights are
  restored before any test prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

FROZEN, LORA, FULL = "frozen", "lora", "full"
MODES = (FROZEN, LORA, FULL)
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast on CUDA, fp32 on the CPU
KEY = "tune"  # config group named in error messages

# (mode, weights carry pretraining?) -> learning rates tried, best chosen on validation.
DEFAULT_LEARNING_RATES: dict[tuple[str, bool], tuple[float, ...]] = {
    (LORA, True): (3e-4, 1e-3),
    (LORA, False): (3e-4, 1e-3),
    (FULL, True): (2e-5, 1e-4),
    (FULL, False): (1e-4, 5e-4),
}


@dataclass(frozen=True)
class TuneSpec:
    """How a model is fine-tuned (every field is ``tune.<field>`` in the config).

    mode: ``frozen`` | ``lora`` | ``full``.
    lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator (scale = alpha / r) and
        dropout on the adapter input.
    learning_rates: tried in order, the best chosen on validation; None = the documented
        default grid for the mode and ablation (``learning_rates_for``).
    max_epochs, patience: early stopping on the task's main validation metric.
    toks_per_batch: token budget of one forward (padded residues + special tokens), the
        batching of extraction (``embed.batching``); accumulate: forwards per optimizer step.
    weight_decay, warmup_steps, max_grad_norm: AdamW's decoupled weight decay, linear warmup
        of the learning rate over the first steps, gradient-norm clipping (0: none).
    head_dropout: dropout of the MLP head (Schmirler et al.: 0.2).
    gradient_checkpointing: recompute each block's activations in the backward pass (less
        memory, about a third more compute).
    precision: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU), ``fp32`` or ``bf16``.
    length_policy: sequences longer than the model's ``max_len``: ``window`` (overlapping
        windows, each residue the mean of the windows covering it, differentiably) or
        ``truncate``.
    """

    mode: str = FROZEN
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    learning_rates: tuple[float, ...] | None = None
    max_epochs: int = 20
    patience: int = 3
    toks_per_batch: int = 4096
    accumulate: int = 1
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    head_dropout: float = 0.2
    gradient_checkpointing: bool = False
    precision: str = "auto"
    length_policy: str = "window"

    def __post_init__(self) -> None:
        self._check_types()
        if self.mode not in MODES:
            raise ValueError(f"{KEY}.mode={self.mode!r}: choose one of {MODES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"{KEY}.precision={self.precision!r}: choose one of {PRECISIONS}")
        positive = {"lora_r": self.lora_r, "max_epochs": self.max_epochs,
                    "patience": self.patience, "toks_per_batch": self.toks_per_batch,
                    "accumulate": self.accumulate, "lora_alpha": self.lora_alpha}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{KEY}.{name}={value!r}: must be > 0")
        unit = {"lora_dropout": self.lora_dropout, "head_dropout": self.head_dropout}
        for name, value in unit.items():
            if not 0 <= value < 1:
                raise ValueError(f"{KEY}.{name}={value!r}: must be in [0, 1)")
        for name in ("weight_decay", "warmup_steps", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{KEY}.{name}={getattr(self, name)!r}: must be >= 0")
        if self.learning_rates is not None:
            rates = tuple(float(r) for r in self.learning_rates)
            if not rates or any(not r > 0 for r in rates):
                raise ValueError(f"{KEY}.learning_rates={list(self.learning_rates)!r}: give "
                                 f"one or more positive rates, or null for the default grid")
            object.__setattr__(self, "learning_rates", rates)

    def _check_types(self) -> None:
        """Each field holds its type (an int where a whole number belongs, a bool for the
        switch): a config value of the wrong type is an error naming its key."""
        for names, kinds, words in (
                (("lora_r", "max_epochs", "patience", "toks_per_batch", "accumulate",
                  "warmup_steps"), int, "an integer"),
                (("lora_alpha", "lora_dropout", "weight_decay", "max_grad_norm",
                  "head_dropout"), (int, float), "a number"),
                (("gradient_checkpointing",), bool, "true or false"),
                (("mode", "precision", "length_policy"), str, "a name")):
            for field_name in names:
                value = getattr(self, field_name)
                if isinstance(value, bool) is not (kinds is bool) or not isinstance(value, kinds):
                    raise ValueError(f"{KEY}.{field_name}={value!r}: expected {words}")

    @classmethod
    def from_mapping(cls, values: Mapping | None) -> TuneSpec:
        """A spec from ``tune``'s plain values; an unknown key is an error naming it."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{KEY}.{unknown[0]} is not a fine-tuning setting; known: "
                             f"{sorted(known)}")
        return cls(**values)

    @property
    def trains(self) -> bool:
        """Whether this spec fine-tunes (``lora``/``full``) rather than probes (``frozen``)."""
        return self.mode != FROZEN

    def learning_rates_for(self, pretrained: bool) -> tuple[float, ...]:
        """The rates tried: ``learning_rates`` if given, else the default grid of the mode for
        weights that carry pretraining (``pretrained``) or not (training from scratch)."""
        if self.learning_rates is not None:
            return self.learning_rates
        if not self.trains:
            raise ValueError(f"{KEY}.mode=frozen trains nothing: it has no learning rates")
        return DEFAULT_LEARNING_RATES[(self.mode, bool(pretrained))]

    def as_dict(self) -> dict:
        """Plain values (a cell key, the checkpoint's identity)."""
        values = asdict(self)
        if self.learning_rates is not None:
            values["learning_rates"] = list(self.learning_rates)
        return values
