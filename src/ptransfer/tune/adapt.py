"""Which weights of a loaded encoder train: LoRA adapters (PEFT) or every weight.

One mechanism for every torch family: the encoder's module (``ModuleEncoder.module_``) is
adapted in place, so the family's own forward (``forward_layers``: its tokens, padding and
special tokens, exactly as ``embed`` handles them) runs the adapters.

``tune.mode=lora`` injects PEFT's ``LoraConfig`` adapters into the attention projections
named by ``LORA_TARGETS``, keyed by architecture (``architecture``):

| architecture | models | targets (query, key, value, output) |
|---|---|---|
| fair-esm | ESM-1, ESM-1b, ESM-2 (``esm.multihead_attention``) | ``self_attn.{q,k,v,out}_proj`` |
| esm, bert | hub ESM-2, ProtBert, AntiBERTy | ``attention.self.{query,key,value}``, ``attention.output.dense`` |
| esmc | ESM C | ``self_attn.{q,k,v,o}_proj`` |
| t5 | ProtT5, Ankh | ``SelfAttention.{q,k,v,o}`` |

CARP is a dilated-convolution ByteNet: it has no attention, so ``tune=lora`` refuses it
(``tune=full`` trains it). fair-esm's ESM-1/1b attention has a fast path that reads
``q_proj.weight`` straight into ``F.multi_head_attention_forward`` and would silently skip
the adapters; LoRA turns it off (``enable_torch_version``), so the projections run as
modules (the same attention, computed step by step).

``tune.mode=full`` leaves every parameter trainable. ``tune.gradient_checkpointing`` wraps
each block of the model (the ``nn.ModuleList`` of ``n_blocks`` blocks every family has) in
``torch.utils.checkpoint``: its activations are recomputed in the backward pass.
"""

from __future__ import annotations

import functools
import types
import warnings

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ptransfer.encoders.weights import ESM_FAMILIES
from ptransfer.tune.spec import FULL, KEY, LORA, TuneSpec

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


def architecture(encoder) -> str:
    """The key of ``LORA_TARGETS``: transformers' ``model_type``, ``fair-esm``, or the family."""
    model_type = dict(getattr(encoder, "arch", None) or {}).get("model_type")
    if model_type:
        return str(model_type)
    return "fair-esm" if encoder.family in ESM_FAMILIES else str(encoder.family)


def check_tunable(encoder, spec: TuneSpec) -> None:
    """Raise a one-line ``ValueError`` naming the key if ``encoder`` cannot be tuned so.

    Needs no weights: a cell checks it before loading anything.
    """
    if not spec.trains:
        raise ValueError(f"{KEY}=frozen trains nothing: frozen cells fit probes on stored "
                         f"features (ptransfer.heads)")
    if not hasattr(encoder, "forward_layers"):
        raise ValueError(f"{KEY}={spec.mode} needs a torch model; model={encoder.name} "
                         f"(family {encoder.family}) has no weights to train")
    if spec.mode == LORA and architecture(encoder) not in LORA_TARGETS:
        reason = NO_LORA.get(architecture(encoder), "no LoRA target modules are known for it")
        raise ValueError(f"{KEY}=lora is not defined for model={encoder.name}: {reason}; "
                         f"use {KEY}=full")


def adapt(encoder, spec: TuneSpec, seed: int):
    """Make ``encoder.module_`` trainable as ``spec`` says, in place.

    Returns the PEFT model wrapping it (``lora``; its ``get_nb_trainable_parameters`` counts
    the adapters) or None (``full``). The adapters' random initialisation is seeded by
    ``seed`` on a forked RNG.
    """
    check_tunable(encoder, spec)
    module = encoder.loaded_module()
    forget_inference_caches(module)
    wrapper = None
    if spec.mode == LORA:
        wrapper = _inject_lora(module, architecture(encoder), spec, seed, encoder.n_blocks)
    elif spec.mode == FULL:
        module.requires_grad_(True)
    if spec.gradient_checkpointing:
        checkpoint_blocks(module, encoder.n_blocks)
    return wrapper


def forget_inference_caches(module: nn.Module) -> None:
    """Drop fair-esm's rotary cos/sin tables: made under ``embed``'s inference mode, they
    cannot enter an autograd graph; the next forward rebuilds them."""
    for sub in module.modules():
        if hasattr(sub, "_seq_len_cached"):
            sub._seq_len_cached = None


def _inject_lora(module: nn.Module, arch: str, spec: TuneSpec, seed: int, n_blocks: int):
    from peft import LoraConfig, get_peft_model

    targets = LORA_TARGETS[arch]
    for sub in module.modules():  # fair-esm's fast path would bypass the adapters
        if hasattr(sub, "enable_torch_version"):
            sub.enable_torch_version = False
    config = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha,
                        lora_dropout=spec.lora_dropout, target_modules=list(targets),
                        bias="none")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # PEFT asks transformers models is_gradient_checkpointing, deprecated in 5.x
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        torch.manual_seed(int(seed))
        wrapper = get_peft_model(module, config)
    from peft.tuners.lora import LoraLayer

    found = sum(isinstance(sub, LoraLayer) for sub in module.modules())
    if found != len(targets) * n_blocks:  # the map no longer matches the architecture
        raise RuntimeError(f"LoRA adapted {found} modules of a {arch} model, expected "
                           f"{len(targets)} per block x {n_blocks} blocks ({targets})")
    return wrapper


def block_list(module: nn.Module, n_blocks: int) -> nn.ModuleList:
    """The model's blocks: the ``nn.ModuleList`` of ``n_blocks`` entries holding most weights."""
    lists = [sub for sub in module.modules()
             if isinstance(sub, nn.ModuleList) and len(sub) == n_blocks]
    if not lists:
        raise ValueError(f"{KEY}.gradient_checkpointing: no list of {n_blocks} blocks found in "
                         f"{type(module).__name__}")
    return max(lists, key=lambda sub: sum(p.numel() for p in sub.parameters()))


def checkpoint_blocks(module: nn.Module, n_blocks: int) -> int:
    """Run each block under ``torch.utils.checkpoint`` (this instance only); returns how many.

    Only while training: in eval mode (validation, test) blocks run as they are.
    """
    blocks = block_list(module, n_blocks)
    for block in blocks:
        block.forward = types.MethodType(_checkpointed(type(block).forward), block)
    return len(blocks)


def _checkpointed(forward):
    @functools.wraps(forward)
    def run(self, *args, **kwargs):
        if not (self.training and torch.is_grad_enabled()):
            return forward(self, *args, **kwargs)
        return checkpoint(forward, self, *args, use_reentrant=False, **kwargs)

    return run


def trainable_parameters(module: nn.Module) -> int:
    """Entries of the parameters that train (``requires_grad``), tied ones once."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
