"""Ablation scopes: which tensors an ablation changes (``ablation.scope``).

- ``full`` (default): every parameter, the definition ``encoders.ablations`` documents.
- ``reference``: exactly the tensors the paper's code changed (microsoft/protein-transfer,
  ``scr/encoding/encoding_classes.py``, ``AbstractEncoder.reset_resample_param``), per family,
  as data below. Everything else keeps its pretrained value, so the module is read from the
  weights file even for ``random_init``.

What the paper's code does, read from that function (it walks ``model.state_dict()``, whose
tensors share storage with the parameters, so in-place inits change the model):

random_init (``reset_param``)
  ESM (every generation): attention q/k/v/out projections (weights and biases), the FFN
  ``fc1``/``fc2`` and the contact head. Its LayerNorm branch builds a new ``Parameter`` and
  discards it, so every LayerNorm stays pretrained; no branch matches ``embed_tokens``,
  ``embed_out`` or ESM-1's ``bias_k``/``bias_v`` (the ESM-1 branch tests ``"bias_" in`` the
  *model name*, never true), nor ``lm_head`` outside ESM-1b. ESM-1b also re-initialises
  ``embed_positions`` (``normal_``, padding row included), ``lm_head.dense`` and
  ``lm_head.weight`` with ``xavier_uniform_``: that tensor *is* the token embedding, so
  ESM-1b's embeddings end up xavier-uniform. The inits are the constructors' except these two
  ESM-1b ones (``PAPER_INITS``).
  CARP: block parameters only (names containing ``layers``: convolutions as
  ``nn.Conv1d`` initialises them, block LayerNorms to ones/zeros); the embedding,
  ``up_embedder``, ``last_norm`` and the decoder stay pretrained, so layer 0 is pretrained.
stat_transfer (``resample_param``)
  ESM: every ``state_dict`` entry is permuted except names containing ``embed_tokens``,
  ``embed_out`` or ``_float_tensor``. ``state_dict`` entries include buffers (ESM-2's rotary
  ``inv_freq``, permuted) and the tied ``lm_head.weight``, which ``load_state_dict`` writes
  after ``embed_tokens``: for ESM-1b and ESM-2 the token embedding *is* permuted (as the LM
  head), for ESM-1 (untied ``embed_out``) it is not.
  CARP: block parameters only, as above.

The paper ran ESM-1, ESM-1b and CARP; the ESM-2 rules are what the same code does to an
ESM-2 model (its ESM branch, not the ``esm1b_`` one).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

FULL = "full"
REFERENCE = "reference"
SCOPES = (FULL, REFERENCE)

# ESM: attention projections, FFN, contact head (the paper's "_proj", "fc", "contact_head").
_ESM_REINIT = (
    r"^layers\.\d+\.(self_attn\.(q|k|v|out)_proj|fc1|fc2)\.(weight|bias)$"
    r"|^contact_head\.regression\.(weight|bias)$"
)
_ESM1B_REINIT = _ESM_REINIT + (
    r"|^embed_positions\.weight$|^lm_head\.(weight|dense\.weight|dense\.bias)$"
)
_ESM_PERMUTE_KEEP = r"embed_tokens|embed_out|_float_tensor"  # substrings, as in the paper
_CARP_BLOCKS = r"(^|\.)layers\.\d+\."  # ByteNet blocks: ByteNetLM or the CARP wrapper's names


@dataclass(frozen=True)
class ScopeRule:
    """The tensors one ablation changes under ``reference`` for one family.

    A name is selected when it matches ``changes`` and not ``keeps``. A tensor changes when
    any of its names is selected: the paper's code treats ``state_dict`` keys one by one, and
    a tied tensor (ESM's ``embed_tokens.weight`` is ``lm_head.weight``) changed under one
    name is changed under the other. ``buffers``: whether buffers are candidates too (the
    paper permuted ``state_dict`` entries, which include persistent buffers).
    """

    changes: str
    keeps: str | None = None
    buffers: bool = False

    def selects(self, names: list[str]) -> bool:
        return any(
            re.search(self.changes, n) and not (self.keeps and re.search(self.keeps, n))
            for n in names
        )


_ESM_STAT = ScopeRule(changes=r".", keeps=_ESM_PERMUTE_KEEP, buffers=True)
_CARP = ScopeRule(changes=_CARP_BLOCKS)

# family -> ablation -> rule (ablation names as in ``encoders.ablations``)
REFERENCE_RULES: dict[str, dict[str, ScopeRule]] = {
    "esm1": {"random_init": ScopeRule(_ESM_REINIT), "stat_transfer": _ESM_STAT},
    "esm1b": {"random_init": ScopeRule(_ESM1B_REINIT), "stat_transfer": _ESM_STAT},
    "esm2": {"random_init": ScopeRule(_ESM_REINIT), "stat_transfer": _ESM_STAT},
    "carp": {"random_init": _CARP, "stat_transfer": _CARP},
}

# (family, ablation) -> [(name regex, init)] where the paper's init is not the constructor's.
PAPER_INITS: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("esm1b", "random_init"): [
        (r"^embed_positions\.weight$", "normal"),  # N(0, 1), padding row not zeroed
        (r"^lm_head\.weight$", "xavier_uniform"),  # the tied token embedding (V x D)
    ],
}
INITS = {"normal": nn.init.normal_, "xavier_uniform": nn.init.xavier_uniform_}


def check_scope(scope: str) -> str:
    """Return ``scope`` if known, else raise naming the config key."""
    if scope not in SCOPES:
        raise ValueError(f"ablation.scope={scope!r} is not a known scope; choose one of {SCOPES}")
    return scope


def reference_rule(family: str | None, ablation: str) -> ScopeRule:
    """The reference rule of (``family``, ``ablation``); an error if there is none."""
    rules = REFERENCE_RULES.get(family or "", {})
    if ablation not in rules:
        raise ValueError(
            f"ablation.scope=reference has no rule for model.family={family!r} with "
            f"ablation={ablation!r} (reference rules exist for {sorted(REFERENCE_RULES)}); "
            f"use ablation.scope=full"
        )
    return rules[ablation]


def _aliases(module: nn.Module, buffers: bool) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """Each distinct tensor of ``module`` once, with every name it has (ties: several)."""
    tensors: dict[int, tuple[torch.Tensor, list[str]]] = {}
    named = list(module.named_parameters(remove_duplicate=False))
    if buffers:
        named += list(module.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        tensors.setdefault(id(tensor), (tensor, []))[1].append(name)
    yield from tensors.values()


def selected_tensors(module: nn.Module, rule: ScopeRule) -> list[tuple[str, torch.Tensor]]:
    """(first name, tensor) of every distinct tensor ``rule`` changes, in module order."""
    return [(names[0], t) for t, names in _aliases(module, rule.buffers) if rule.selects(names)]


def changed_names(module: nn.Module, family: str | None, ablation: str, scope: str) -> set[str]:
    """Every parameter/buffer name (tied aliases included) whose values the ablation changes.

    ``full``: every parameter for ``random_init`` and ``stat_transfer``; ``pretrained``
    changes nothing in either scope. Used by the README table and the tests' bookkeeping.
    """
    check_scope(scope)
    if ablation == "pretrained":
        return set()
    if scope == FULL:
        return {n for n, _ in module.named_parameters(remove_duplicate=False)}
    rule = reference_rule(family, ablation)
    return {n for _, names in _aliases(module, rule.buffers) if rule.selects(names) for n in names}


@torch.no_grad()
def apply_paper_inits(module: nn.Module, family: str | None, ablation: str) -> None:
    """Re-draw the tensors whose paper init differs from the constructor's (global RNG)."""
    for pattern, init in PAPER_INITS.get((family or "", ablation), []):
        for name, param in module.named_parameters(remove_duplicate=False):
            if re.search(pattern, name):
                INITS[init](param)
