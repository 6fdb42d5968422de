"""Which weights fine-tuning trains, on tiny models of every torch family in real formats.

LoRA: PEFT's adapters on the attention projections train (with the head) and every base
weight stays bit-identical; the adapters reach the output (fair-esm's ESM-1/1b fast path
would skip them); the count of trained parameters is PEFT's own plus the head's. Full: every
weight of every block changes. CARP (no attention) and one-hot refuse LoRA in one line.
Gradient checkpointing recomputes blocks without changing a gradient.
"""

from __future__ import annotations

import pytest
import torch
from tune_helpers import LORA_FAMILIES, count_k, load, toy_task, write_weights

from ptransfer.encoders.onehot import OneHotEncoder
from ptransfer.encoders.weights import count_parameters
from ptransfer.tune.adapt import (
    LORA_TARGETS,
    adapt,
    architecture,
    block_list,
    check_encoder,
    check_tunable,
    checkpoint_blocks,
)
from ptransfer.tune.data import make_batches
from ptransfer.tune.finetune import FineTuner
from ptransfer.tune.network import TuneNetwork
from ptransfer.tune.spec import TuneSpec

TASK = toy_task(count_k, sizes=(24, 8, 8), length=12)
ONE_EPOCH = dict(max_epochs=1, learning_rates=(1e-2,), toks_per_batch=128)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("tune_weights"))


def _base_state(encoder) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in encoder.loaded_module().state_dict().items()}


def _head_parameters(dim: int, n_out: int = 1) -> int:
    return dim * dim + dim + dim * n_out + n_out  # Linear(D, D) + Linear(D, out)


@pytest.mark.parametrize("family", LORA_FAMILIES)
def test_lora_trains_only_adapters_and_head_and_keeps_every_base_weight(family, weights):
    encoder = load(family, weights)
    before = _base_state(encoder)
    tuner = FineTuner(TuneSpec(mode="lora", **ONE_EPOCH), seed=0, progress=False)
    tuner.fit(encoder, TASK)
    module = encoder.loaded_module()
    # PEFT renames an adapted projection's weight to <name>.base_layer.weight
    after = {n.replace(".base_layer", ""): v for n, v in module.state_dict().items()
             if "lora_" not in n}
    assert after.keys() == before.keys()
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed == []
    trained = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    n_adapted = len(LORA_TARGETS[architecture(encoder.family, getattr(encoder, 'arch', None))]) \
        * encoder.n_blocks
    assert len(trained) == 2 * n_adapted  # an A and a B per adapted projection
    peft_trainable, _ = tuner.peft_model_.get_nb_trainable_parameters()
    assert tuner.n_trainable_backbone_ == peft_trainable
    assert tuner.n_trainable_ == peft_trainable + _head_parameters(encoder.dim)
    # the trained adapters reach the last layer's output
    with torch.no_grad():
        adapted = encoder.forward_layers(["MKVLAAGKRE"], [encoder.n_layers - 1])
        with tuner.peft_model_.disable_adapter():
            base = encoder.forward_layers(["MKVLAAGKRE"], [encoder.n_layers - 1])
    assert (adapted - base).abs().max() > 1e-4


@pytest.mark.parametrize("family", ["esm2", "carp", "antiberty", "prot_t5"])
def test_full_fine_tuning_changes_every_weight_of_every_block(family, weights):
    encoder = load(family, weights)
    blocks = block_list(encoder.loaded_module(), encoder.n_blocks)
    before = {n: p.detach().clone() for n, p in blocks.named_parameters()}
    tuner = FineTuner(TuneSpec(mode="full", **ONE_EPOCH), seed=0, progress=False)
    tuner.fit(encoder, TASK)
    assert tuner.peft_model_ is None
    assert tuner.n_trainable_backbone_ == count_parameters(encoder.loaded_module())
    assert tuner.n_trainable_ == tuner.n_trainable_backbone_ + _head_parameters(encoder.dim)
    unchanged = [n for n, p in blocks.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []


def test_lora_is_refused_where_it_is_undefined(weights):
    carp = load("carp", weights)
    with pytest.raises(ValueError, match=r"^tune=lora is not defined for model=carp_tiny: "
                                         r"CARP .* no attention .*use tune=full$"):
        check_encoder(carp, TuneSpec(mode="lora"))
    check_encoder(carp, TuneSpec(mode="full"))  # a CNN trains fully
    onehot = OneHotEncoder(name="onehot", family="onehot", n_blocks=0, dim=21, n_params=0,
                           max_len=None)
    for mode in ("lora", "full"):
        with pytest.raises(ValueError, match=rf"^tune={mode} needs a torch model; "
                                             r"model=onehot"):
            check_encoder(onehot, TuneSpec(mode=mode))
    with pytest.raises(ValueError, match="^tune=frozen trains nothing"):
        check_encoder(carp, TuneSpec(mode="frozen"))
    # from the model config alone (no weights): what the config checks call
    check_tunable(TuneSpec(mode="lora"), "antiberty", "antiberty", {"model_type": "bert"})
    with pytest.raises(ValueError, match="^tune=lora is not defined for model=carp_600k"):
        check_tunable(TuneSpec(mode="lora"), "carp_600k", "carp", {"d_model": 128})
    for mode in ("lora", "full"):
        with pytest.raises(ValueError, match=rf"^tune={mode} is not built for model=unirep_64: "
                                             r"UniRep's mLSTM forward .* use tune=frozen$"):
            check_tunable(TuneSpec(mode=mode), "unirep_64", "unirep")


def _gradients(family: str, weights, checkpointed: bool) -> dict[str, torch.Tensor]:
    encoder = load(family, weights)
    adapt(encoder, TuneSpec(mode="full"), seed=0)
    if checkpointed:
        assert checkpoint_blocks(encoder.loaded_module(), encoder.n_blocks) == encoder.n_blocks
    torch.manual_seed(0)
    network = TuneNetwork(encoder, "protein", 1, dropout=0.0).train()
    batch = make_batches(TASK.splits["train"], _batching(encoder))[0]
    network(batch).pow(2).sum().backward()
    return {n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None}


def _batching(encoder):
    from ptransfer.embed.batching import Batching

    return Batching(toks_per_batch=128, max_len=encoder.max_len)


@pytest.mark.parametrize("family", ["esm2", "carp", "prot_bert", "ankh"])
def test_gradient_checkpointing_gives_the_same_gradients(family, weights, monkeypatch):
    import ptransfer.tune.adapt as adapt_module

    plain = _gradients(family, weights, checkpointed=False)
    calls = []
    original = adapt_module.checkpoint
    monkeypatch.setattr(adapt_module, "checkpoint",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    recomputed = _gradients(family, weights, checkpointed=True)
    assert len(calls) == load(family, weights).n_blocks  # every block went through it
    assert plain.keys() == recomputed.keys()
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-7)
