"""Which weights of a loaded encoder train: LoRA adapters (PEFT) or every weight.

One mechanism for every torch family: the encoder's module (``ModuleEncoder.module_``) is
adapted in place, so the family's own forward (``forward_layers``: its tokens, padding and
special tokens, exactly as ``embed`` handles them) runs the adapters.

``tune.mode=lora`` injects PEFT's ``LoraConfig`` adapters into the attention projections
named by ``tune.targets.LORA_TARGETS`` (per architecture; CARP, without attention, is refused).
fair-esm's ESM-1/1b attention has a fast path that reads ``q_proj.weight`` straight into
``F.multi_head_attention_forward`` and would silently skip the adapters; LoRA turns it off
(``enable_torch_version``), so the projections run as modules (the same attention, computed
step by step).

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

from ptransfer.tune.spec import FULL, KEY, LORA, TuneSpec
from ptransfer.tune.targets import (  # noqa: F401 - LORA_TARGETS, check_tunable: adapt's API
    LORA_TARGETS,
    architecture,
    check_encoder,
    check_tunable,
)


def adapt(encoder, spec: TuneSpec, seed: int):
    """Make ``encoder.module_`` trainable as ``spec`` says, in place.

    Returns the PEFT model wrapping it (``lora``; its ``get_nb_trainable_parameters`` counts
    the adapters) or None (``full``). The adapters' random initialisation is seeded by
    ``seed`` on a forked RNG.
    """
    check_encoder(encoder, spec)
    module = encoder.loaded_module()
    forget_inference_caches(module)
    wrapper = None
    if spec.mode == LORA:
        arch = architecture(encoder.family, getattr(encoder, "arch", None))
        wrapper = _inject_lora(module, arch, spec, seed, encoder.n_blocks)
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
