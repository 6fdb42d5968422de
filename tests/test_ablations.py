"""Ablations on tiny ESM-2, ESM-1b, ESM-1 and CARP modules whose every parameter is "trained"."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import build_module, build_pretrained
from torch import nn

from ptransfer.encoders.ablations import (
    ABLATIONS,
    ablated_module,
    apply_ablation,
    needs_weights,
    random_init,
    stat_transfer,
)

FAMILIES = ["esm2", "esm1b", "esm1", "carp"]


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters by name (tied ones once), cloned."""
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def is_constant(tensor: torch.Tensor) -> bool:
    return bool((tensor == tensor.flatten()[0]).all())


# --- random_init ---------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_random_init_changes_every_parameter(family):
    module = build_pretrained(family)
    before = snapshot(module)
    random_init(module, seed=0)
    after = snapshot(module)
    assert after.keys() == before.keys()
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert unchanged == []


@pytest.mark.parametrize("family", FAMILIES)
def test_random_init_follows_the_constructors_init(family):
    """Constant inits (LayerNorm 1/0, zero biases) exactly; random ones at the same scale."""
    fresh = []
    for seed in range(5):  # several constructions: a robust bound and spread per tensor
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh.append(snapshot(build_module(family)))
    reinit = snapshot(random_init(build_pretrained(family), seed=0))
    for name, got in reinit.items():
        samples = torch.stack([sample[name] for sample in fresh])
        if got.numel() > 1 and is_constant(samples):
            assert torch.equal(got, samples[0]), name
            continue
        assert got.abs().max() <= 1.25 * samples.abs().max(), name
        if got.numel() >= 64:
            ratio = got.std().item() / samples.std().item()
            assert 0.6 < ratio < 1.6, (name, ratio)


def test_random_init_esm2_specific_rules():
    module = random_init(build_pretrained("esm2"), seed=3)
    dim = module.embed_dim
    attn = module.layers[0].self_attn
    # fair-esm's MultiheadAttention.reset_parameters: xavier_uniform(gain 1/sqrt 2) on q/k/v,
    # run after nn.Linear's own init, whose bias bound 1/sqrt(fan_in) it leaves in place.
    xavier_bound = math.sqrt(6 / (dim + dim)) / math.sqrt(2)
    assert attn.q_proj.weight.abs().max() <= xavier_bound
    assert attn.q_proj.weight.abs().max() > 0.8 * xavier_bound
    assert attn.q_proj.bias.abs().max() <= 1 / math.sqrt(dim)
    assert torch.equal(attn.out_proj.bias, torch.zeros(dim))
    assert torch.equal(module.lm_head.bias, torch.zeros(module.alphabet_size))
    assert torch.equal(module.embed_tokens.weight[module.padding_idx], torch.zeros(dim))
    assert module.lm_head.weight is module.embed_tokens.weight  # still tied


def test_random_init_carp_resets_padding_row_and_norms():
    module = random_init(build_pretrained("carp"), seed=3)
    embedding = module.embedder.embedder
    assert torch.equal(embedding.weight[embedding.padding_idx], torch.zeros(8))
    assert torch.equal(module.last_norm.weight, torch.ones(16))
    assert torch.equal(module.last_norm.bias, torch.zeros(16))


def test_random_init_refuses_a_parameter_it_cannot_initialise():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.scale = nn.Parameter(torch.ones(2))

    with pytest.raises(NotImplementedError, match=r"\['scale'\].*INIT_RULES"):
        random_init(Custom(), seed=0)


# --- stat_transfer -------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_stat_transfer_keeps_each_tensors_values_and_changes_their_order(family):
    module = build_pretrained(family)
    before = snapshot(module)
    stat_transfer(module, seed=0)
    after = snapshot(module)
    for name, original in before.items():
        permuted = after[name]
        assert permuted.shape == original.shape, name
        assert torch.equal(permuted.flatten().sort().values, original.flatten().sort().values)
        if original.numel() > 1:
            assert not torch.equal(permuted, original), name


def test_stat_transfer_permutes_tied_weights_once():
    module = build_pretrained("esm2")
    embedding = module.embed_tokens.weight.detach().clone()
    stat_transfer(module, seed=0)
    assert module.lm_head.weight is module.embed_tokens.weight
    permuted = module.embed_tokens.weight.detach()
    assert torch.equal(permuted.flatten().sort().values, embedding.flatten().sort().values)
    assert not torch.equal(permuted, embedding)


def test_stat_transfer_leaves_buffers_alone():
    module = build_pretrained("esm2")
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    assert any("inv_freq" in name for name in buffers)
    stat_transfer(module, seed=0)
    for name, buffer in module.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


# --- both: seeding, RNG hygiene, dispatch --------------------------------------------


@pytest.mark.parametrize("family", ["esm2", "carp"])
@pytest.mark.parametrize("ablation", ["random_init", "stat_transfer"])
def test_same_seed_same_weights_other_seed_different(family, ablation):
    def ablated(seed):
        return apply_ablation(build_pretrained(family), ablation, seed).state_dict()

    first, again, other = ablated(7), ablated(7), ablated(8)
    assert all(torch.equal(first[k], again[k]) for k in first)
    differing = {k for k in first if not torch.equal(first[k], other[k])}
    # Every permutable tensor (stat_transfer) or randomly initialised one (random_init:
    # LayerNorms and zero biases re-initialise to constants whatever the seed) depends on it.
    template = build_pretrained(family) if ablation == "stat_transfer" else build_module(family)
    seeded = {
        name
        for name, p in template.named_parameters()
        if p.numel() > 1 and not is_constant(p.detach())
    }
    assert seeded and seeded <= differing, sorted(seeded - differing)


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_global_rng_state_is_untouched(ablation):
    module = build_pretrained("esm2")
    torch.manual_seed(2024)
    state = torch.get_rng_state()
    apply_ablation(module, ablation, seed=5)
    assert torch.equal(torch.get_rng_state(), state)


def test_building_inside_ablated_module_leaves_the_global_rng_alone():
    torch.manual_seed(2024)
    state = torch.get_rng_state()

    def never_called():
        raise AssertionError("random_init must not read weights")

    module = ablated_module("random_init", 1, build=lambda: build_module("esm2"), load=never_called)
    assert isinstance(module, nn.Module)
    assert torch.equal(torch.get_rng_state(), state)


def test_pretrained_is_a_no_op():
    module = build_pretrained("carp")
    before = snapshot(module)
    assert apply_ablation(module, "pretrained", seed=0) is module
    assert all(torch.equal(before[k], v) for k, v in snapshot(module).items())


def test_unknown_ablation_is_a_clear_error():
    with pytest.raises(ValueError, match=r"ablation='shuffle' is not a known ablation"):
        apply_ablation(build_pretrained("carp"), "shuffle", seed=0)


def test_needs_weights():
    assert needs_weights("pretrained") and needs_weights("stat_transfer")
    assert not needs_weights("random_init")
    with pytest.raises(ValueError, match="ablation='frozen'"):
        needs_weights("frozen")
