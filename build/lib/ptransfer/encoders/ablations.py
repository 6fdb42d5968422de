"""Ablations: seeded transformations of a loaded model, applied before extraction.

- ``pretrained``: the model as loaded (no-op).
- ``random_init``: every parameter re-initialised the way the architecture initialises itself
  in its constructor. Each submodule's own ``reset_parameters()`` runs (children before
  parents, so fair-esm's ``MultiheadAttention.reset_parameters`` overrides the default
  ``nn.Linear`` init of its projections exactly as in its constructor); parameters no
  ``reset_parameters`` covers get the rule their constructor applies (``INIT_RULES``).
  A parameter covered by neither is an error: nothing may silently stay pretrained.
- ``stat_transfer``: every parameter's entries permuted in place by a random permutation of
  the flattened tensor, so each tensor keeps its exact multiset of values (LayerNorms and
  embeddings included) while its structure is destroyed. Tied parameters (ESM's
  ``lm_head.weight`` *is* ``embed_tokens.weight``) are permuted once, so they stay tied.

Buffers are never touched: the ones these architectures carry are not learned (rotary
``inv_freq``, the sinusoidal float tensor) and hold no pretraining information.

``scope`` (``ablation.scope``): ``full`` is the above; ``reference`` changes only the tensors
the paper's code changed (``encoders.ablation_scopes``, per family), the rest stays as read
from the weights file. ``random_init`` then re-initialises as above, puts the kept tensors
back and applies the paper's own init where it differs from the constructor's; it reads the
weights file. ``stat_transfer`` permutes the selected tensors (buffers included where the
paper's rule covers them) from the same private generator.

Both ablations are seeded and leave the global torch RNG state untouched: ``random_init``
seeds a forked RNG (the ``reset_parameters`` methods draw from the global generator);
``stat_transfer`` draws from a private ``torch.Generator`` on the CPU. Encoders apply them on
the CPU before ``.to(device)``, so a seed gives the same weights on every machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from esm.model.esm1 import ProteinBertModel
from esm.modules import ESM1LayerNorm, RobertaLMHead
from torch import nn

from ptransfer.encoders.ablation_scopes import (
    FULL,
    REFERENCE,
    apply_paper_inits,
    check_scope,
    reference_rule,
    selected_tensors,
)

PRETRAINED = "pretrained"
RANDOM_INIT = "random_init"
STAT_TRANSFER = "stat_transfer"
ABLATIONS = (PRETRAINED, RANDOM_INIT, STAT_TRANSFER)


def check_ablation(name: str) -> str:
    """Return ``name`` if it is a known ablation, else raise naming the config key."""
    if name not in ABLATIONS:
        raise ValueError(f"ablation={name!r} is not a known ablation; choose one of {ABLATIONS}")
    return name


def needs_weights(name: str, scope: str = FULL) -> bool:
    """Whether ``name`` starts from pretrained weights.

    ``random_init`` with ``scope=full`` never reads a file; with ``reference`` it keeps some
    tensors pretrained, so it does.
    """
    return check_ablation(name) != RANDOM_INIT or check_scope(scope) == REFERENCE


def apply_ablation(
    module: nn.Module, name: str, seed: int, scope: str = FULL, family: str | None = None
) -> nn.Module:
    """Apply ablation ``name`` to ``module`` in place, seeded by ``seed``; returns ``module``.

    ``family`` picks the reference rules (``scope="reference"``); ``full`` ignores it.
    """
    check_ablation(name)
    check_scope(scope)
    if name == RANDOM_INIT:
        return random_init(module, seed, scope, family)
    if name == STAT_TRANSFER:
        return stat_transfer(module, seed, scope, family)
    return module


def ablated_module(
    name: str,
    seed: int,
    build: Callable[[], nn.Module],
    load: Callable[[], nn.Module],
    scope: str = FULL,
    family: str | None = None,
) -> nn.Module:
    """Build (``random_init``, full scope) or load a module, then apply the ablation.

    Constructing a module draws from the global RNG (every layer initialises itself); doing
    it inside a forked RNG keeps the caller's random stream, and so its results, unchanged.
    ``random_init`` with ``scope=full`` never calls ``load``: it needs no weights on disk.
    """
    with torch.random.fork_rng(devices=[]):
        module = load() if needs_weights(name, scope) else build()
    return apply_ablation(module, name, seed, scope, family)


# --- random_init -----------------------------------------------------------------------


def _zero_(*params: nn.Parameter | None) -> list[nn.Parameter]:
    present = [p for p in params if p is not None]
    for p in present:
        nn.init.zeros_(p)
    return present


def _init_esm1_layer_norm(module: ESM1LayerNorm) -> list[nn.Parameter]:
    # Constructor: weight = ones, bias = zeros (when affine).
    if module.weight is None:
        return []
    nn.init.ones_(module.weight)
    return [module.weight, *_zero_(module.bias)]


def _init_roberta_lm_head(module: RobertaLMHead) -> list[nn.Parameter]:
    # Constructor: bias = zeros. ``weight`` is the token embedding (tied), which the
    # embedding's own reset_parameters re-initialises: leave it to that.
    return _zero_(module.bias)


def _init_protein_bert(module: ProteinBertModel) -> list[nn.Parameter]:
    # ESM-1 constructor: output projection ``embed_out`` and its bias are zeros.
    return _zero_(getattr(module, "embed_out", None), getattr(module, "embed_out_bias", None))


# Modules owning parameters that no ``reset_parameters`` covers -> the constructor's rule.
INIT_RULES: dict[type[nn.Module], Callable[[nn.Module], list[nn.Parameter]]] = {
    ESM1LayerNorm: _init_esm1_layer_norm,
    RobertaLMHead: _init_roberta_lm_head,
    ProteinBertModel: _init_protein_bert,
}


def _children_first(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Post-order traversal: a parent's init runs after its children's, as in constructors."""
    for name, child in module.named_children():
        yield from _children_first(child, f"{prefix}{name}.")
    yield prefix.rstrip("."), module


def _init_rule(module: nn.Module) -> Callable[[nn.Module], list[nn.Parameter]] | None:
    for cls in type(module).__mro__:
        if cls in INIT_RULES:
            return INIT_RULES[cls]
    return None


def _reinitialise(module: nn.Module) -> set[int]:
    """Re-initialise every submodule in place; return the ids of the parameters covered."""
    covered: set[int] = set()
    for _, sub in _children_first(module):
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
            covered.update(id(p) for p in sub.parameters(recurse=False))
        rule = _init_rule(sub)
        if rule is not None:
            covered.update(id(p) for p in rule(sub))
    return covered


@contextlib.contextmanager
def _seeded_rng(module: nn.Module, seed: int) -> Iterator[None]:
    """Fork the RNGs of every device ``module`` lives on and seed them with ``seed``."""
    cuda = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


@torch.no_grad()
def random_init(
    module: nn.Module, seed: int, scope: str = FULL, family: str | None = None
) -> nn.Module:
    """Re-initialise the parameters of ``module`` as its constructor does, seeded; in place.

    ``scope="full"``: every parameter. ``"reference"``: only those the paper's code changed
    for ``family``; the others are put back as they were, and the paper's own init replaces
    the constructor's where they differ (``ablation_scopes.PAPER_INITS``).
    Raises ``NotImplementedError`` naming any parameter neither a ``reset_parameters`` nor an
    ``INIT_RULES`` entry covers, rather than leaving it pretrained.
    """
    kept: list[tuple[nn.Parameter, torch.Tensor]] = []
    if check_scope(scope) == REFERENCE:
        changed = {id(t) for _, t in selected_tensors(module, reference_rule(family, RANDOM_INIT))}
        kept = [(p, p.detach().clone()) for p in module.parameters() if id(p) not in changed]
    with _seeded_rng(module, int(seed)):
        covered = _reinitialise(module)
        for param, value in kept:
            param.copy_(value)
        if scope == REFERENCE:
            apply_paper_inits(module, family, RANDOM_INIT)
    missed = [name for name, p in module.named_parameters() if id(p) not in covered]
    if missed:
        raise NotImplementedError(
            f"random_init does not know how {type(module).__name__} initialises parameter(s) "
            f"{missed}: add a rule for their module to ptransfer.encoders.ablations.INIT_RULES"
        )
    return module


# --- stat_transfer ---------------------------------------------------------------------


@torch.no_grad()
def stat_transfer(
    module: nn.Module, seed: int, scope: str = FULL, family: str | None = None
) -> nn.Module:
    """Permute the entries of every parameter of ``module`` in place, seeded.

    Each parameter (tied ones once: ``named_parameters`` de-duplicates them) is flattened,
    permuted by its own random permutation and written back, so its sorted values are
    unchanged. Permutations are drawn on the CPU from a private generator, in parameter order.
    ``scope="reference"``: only the tensors the paper's code permuted for ``family``
    (buffers included where its rule says so), in the same order.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    if check_scope(scope) == REFERENCE:
        tensors = selected_tensors(module, reference_rule(family, STAT_TRANSFER))
    else:
        tensors = list(module.named_parameters())
    for _, param in tensors:
        order = torch.randperm(param.numel(), generator=generator).to(param.device)
        param.data.copy_(param.data.flatten()[order].view_as(param))
    return module
