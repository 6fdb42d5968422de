"""Which attention projections LoRA adapts per architecture, and which models can be
fine-tuned at all (pure: no torch, so sweeps and config checks ask it cheaply).

| architecture | models | targets (query, key, value, output) |
|---|---|---|
| fair-esm | ESM-1, ESM-1b, ESM-2 (``esm.multihead_attention``) | ``self_attn.{q,k,v,out}_proj`` |
| esm, bert | hub ESM-2, ProtBert, AntiBERTy | ``attention.self.{query,key,value}``, ``attention.output.dense`` |
| esmc | ESM C | ``self_attn.{q,k,v,o}_proj`` |
| t5 | ProtT5, Ankh | ``SelfAttention.{q,k,v,o}`` |

CARP is a dilated-convolution ByteNet: it has no attention, so ``tune=lora`` refuses it
(``tune=full`` trains it). UniRep's mLSTM forward is written for inference (it writes its
states in place, row group by row group), so neither fine-tune is built for it: refused by name.
One-hot has no weights: neither fine-tune applies.
"""

from __future__ import annotations

from ptransfer.tune.spec import KEY, LORA, TuneSpec

FAIR_ESM_FAMILIES = ("esm1", "esm1b", "esm2")  # encoders.weights.ESM_FAMILIES (torch-free here)
_BERT_ATTENTION = ("attention.self.query", "attention.self.key", "attention.self.value",
                   "attention.output.dense")
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "fair-esm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                 "self_attn.out_proj"),
    "esm": _BERT_ATTENTION,
    "bert": _BERT_ATTENTION,
    "esmc": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    "t5": ("SelfAttention.q", "SelfAttention.k", "SelfAttention.v", "SelfAttention.o"),
}
NO_LORA = {"carp": "CARP is a dilated-convolution ByteNet with no attention projections"}
# Families whose forward cannot be differentiated: the reason, in the refusal.
NOT_TUNABLE = {"unirep": "UniRep's mLSTM forward is built for inference (its states are "
                         "written in place), so it has no differentiable forward"}


def architecture(family: str, arch=None) -> str:
    """The key of ``LORA_TARGETS``: transformers' ``model_type``, ``fair-esm``, or the family."""
    model_type = dict(arch or {}).get("model_type")
    if model_type:
        return str(model_type)
    return "fair-esm" if family in FAIR_ESM_FAMILIES else str(family)


def check_tunable(spec: TuneSpec, name: str, family: str, arch=None) -> None:
    """Raise a one-line ``ValueError`` naming the key if model ``name`` (its ``family`` and
    ``arch``: the ``model`` config's values) cannot be tuned as ``spec`` says.

    Needs no weights: the config checks call it before anything runs.
    """
    if not spec.trains:
        raise ValueError(f"{KEY}=frozen trains nothing: frozen cells fit probes on stored "
                         f"features (ptransfer.heads)")
    if family == "onehot":
        raise ValueError(f"{KEY}={spec.mode} needs a torch model; model={name} (family "
                         f"{family}) has no weights to train")
    if family in NOT_TUNABLE:
        raise ValueError(f"{KEY}={spec.mode} is not built for model={name}: "
                         f"{NOT_TUNABLE[family]}; use {KEY}=frozen")
    if spec.mode == LORA and architecture(family, arch) not in LORA_TARGETS:
        reason = NO_LORA.get(architecture(family, arch),
                             "no LoRA target modules are known for it")
        raise ValueError(f"{KEY}=lora is not defined for model={name}: {reason}; "
                         f"use {KEY}=full")


def check_encoder(encoder, spec: TuneSpec) -> None:
    """``check_tunable`` for a built encoder, which must have a differentiable forward."""
    check_tunable(spec, encoder.name, encoder.family, getattr(encoder, "arch", None))
    if not hasattr(encoder, "forward_layers"):
        raise ValueError(f"{KEY}={spec.mode} needs a torch model; model={encoder.name} has "
                         f"no differentiable forward")


