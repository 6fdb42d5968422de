"""HfEncoder on every transformers family (ESM-2, ESM C, ProtBert, AntiBERTy, ProtT5, Ankh):
features equal a plain transformers forward, batching, layer conventions, ablations."""

from __future__ import annotations

import hydra
import pytest
import torch
from hf_models import (
    HF_FAMILIES,
    TINY_HF_ARCH,
    build_hf,
    esm2_to_transformers,
    hf_model_config,
    plain_features,
    tiny_kwargs,
    write_pretrained,
    write_tokenizer,
)
from omegaconf import OmegaConf
from tiny_models import model_config

from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.esm import load_esm_module
from ptransfer.encoders.hf import HfEncoder
from ptransfer.encoders.hf_families import build_module

# Rare residues (U Z O B X) included: each family's convention must handle them.
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIK", "WY", "MKTAYIAKQRQ", "LAGVSERTIDPKQNFYMHWC",
             "MKUZOBXAA"]


def make(family: str, ablation: str = "pretrained", seed: int = 0, **overrides) -> HfEncoder:
    """Instantiate as the cell does (Hydra ``_target_``) and load."""
    config = OmegaConf.create(hf_model_config(family, **overrides))
    encoder = hydra.utils.instantiate(config, _convert_="all")
    return encoder.load(CheckpointRef(), ablation=ablation, seed=seed)


@pytest.fixture(scope="module")
def pretrained_dirs(tmp_path_factory):
    """family -> a save_pretrained directory of a perturbed tiny model with its tokenizer."""
    root = tmp_path_factory.mktemp("hf_tiny")
    return {f: write_pretrained(build_hf(f), root / f, f) for f in HF_FAMILIES}


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_features_equal_a_plain_transformers_forward(family, pretrained_dirs):
    encoder = make(family, weights=str(pretrained_dirs[family]))
    for sequence in SEQUENCES:
        expected = plain_features(family, pretrained_dirs[family], sequence)
        found = encoder.embed([sequence])[:, 0]
        assert found.shape == expected.shape == (3, len(sequence), 32), sequence
        torch.testing.assert_close(found, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_batched_features_equal_single_sequence_features(family, pretrained_dirs):
    encoder = make(family, weights=str(pretrained_dirs[family]))
    batch = encoder.embed(SEQUENCES)
    assert batch.shape == (3, len(SEQUENCES), max(map(len, SEQUENCES)), 32)
    assert not torch.isnan(batch).any()
    for i, sequence in enumerate(SEQUENCES):
        single = encoder.embed([sequence])[:, 0]
        torch.testing.assert_close(batch[:, i, : len(sequence)], single, atol=1e-5, rtol=1e-5)


def test_fair_esm_and_transformers_esm2_give_the_same_features(tmp_path, tiny_esm2_path):
    # The fair-esm file and the converted transformers directory hold the same weights.
    module = load_esm_module("esm2", tiny_esm2_path)  # the file's weights, as fair-esm reads them
    converted = write_pretrained(esm2_to_transformers(module), tmp_path)
    fair = hydra.utils.instantiate(
        OmegaConf.create(model_config("esm2", weights=str(tiny_esm2_path))), _convert_="all"
    ).load(CheckpointRef(), "pretrained", 0)
    hf = make("hf_esm2", weights=str(converted))
    sequences = SEQUENCES[:5]
    expected, found = fair.embed(sequences), hf.embed(sequences)
    assert found.shape == expected.shape == (3, len(sequences), max(map(len, sequences)), 32)
    for i, sequence in enumerate(sequences):  # every layer, real residues only
        n = len(sequence)
        torch.testing.assert_close(found[:, i, :n], expected[:, i, :n], atol=1e-5, rtol=0)


def _final_norm(family: str, module):
    return {"hf_esm2": lambda: module.encoder.emb_layer_norm_after, "esmc": lambda: module.norm,
            "prot_t5": lambda: module.encoder.final_layer_norm,
            "ankh": lambda: module.encoder.final_layer_norm}[family]()


def _blocks(module):
    for path in ("encoder.layer", "layers", "encoder.block"):
        try:
            return module.get_submodule(path)
        except AttributeError:
            continue
    raise AssertionError("no block list")


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_layer_zero_is_the_embedding_and_only_the_last_has_the_final_norm(
        family, pretrained_dirs):
    encoder = make(family, weights=str(pretrained_dirs[family]))
    module = encoder.module_
    captured = {}
    embedding = (module.encoder if family in ("prot_t5", "ankh") else module).get_input_embeddings()
    hooks = [embedding.register_forward_hook(
                 lambda _m, _i, out: captured.setdefault("embed", out)),
             _blocks(module)[-1].register_forward_hook(
                 lambda _m, _i, out: captured.setdefault("last", out))]
    sequence = SEQUENCES[0]
    features = encoder.embed([sequence])[:, 0]
    for hook in hooks:
        hook.remove()
    last = captured["last"][0] if isinstance(captured["last"], tuple) else captured["last"]
    start = 0 if family in ("prot_t5", "ankh") else 1
    residues = slice(start, start + len(sequence))
    with torch.no_grad():
        if family in ("prot_bert", "antiberty"):  # post-LN: the block output is the feature
            torch.testing.assert_close(features[-1], last[0, residues])
            return
        if family in ("prot_t5", "ankh"):  # T5: layer 0 is the token embedding itself
            torch.testing.assert_close(features[0], captured["embed"][0, residues])
        norm = _final_norm(family, module)
        torch.testing.assert_close(features[-1], norm(last)[0, residues])
        assert (features[-2] - norm(features[-2])).abs().max() > 1e-2  # no norm before


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_random_init_is_a_fresh_build_under_that_seed(family, pretrained_dirs, tmp_path):
    from transformers import AutoTokenizer

    # The tokenizer files alone (no weights file): random_init reads no weights.
    folder = tmp_path / "tokenizer_only"
    AutoTokenizer.from_pretrained(str(pretrained_dirs[family])).save_pretrained(str(folder))
    rng = torch.random.get_rng_state()
    encoder = make(family, ablation="random_init", seed=7, weights=str(folder))
    assert torch.equal(torch.random.get_rng_state(), rng)  # caller's stream untouched
    torch.manual_seed(7)
    fresh = build_module(TINY_HF_ARCH[family], tiny_kwargs(family))
    state, expected = encoder.module_.state_dict(), fresh.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    other = make(family, ablation="random_init", seed=8, weights=str(folder)).module_
    key = next(k for k in expected if k.endswith("weight") and expected[k].ndim == 2)
    assert not torch.equal(other.state_dict()[key], state[key])
    assert encoder.embed(SEQUENCES[:2]).shape == (3, 2, len(SEQUENCES[0]), 32)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_stat_transfer_permutes_every_tensor(family, pretrained_dirs):
    original = build_hf(family).state_dict()
    permuted = make(family, "stat_transfer", 3, weights=str(pretrained_dirs[family]))
    params = dict(permuted.module_.named_parameters())
    assert params
    for name, param in params.items():
        source = original[name]
        assert torch.equal(param.detach().flatten().sort().values, source.flatten().sort().values)
        if source.numel() > 1:
            assert not torch.equal(param.detach(), source), name


@pytest.mark.parametrize("family", ["esmc", "antiberty", "prot_t5"])
def test_reference_scope_is_a_clear_error(family):
    encoder = hydra.utils.instantiate(OmegaConf.create(hf_model_config(family)), _convert_="all")
    with pytest.raises(ValueError, match=f"ablation.scope='reference'.*{family}"):
        encoder.load(CheckpointRef(), "random_init", 0, scope="reference")


def test_long_sequences_are_windowed_by_the_extraction(pretrained_dirs):
    from ptransfer.embed.extract import embed_sequences

    encoder = make("prot_t5", weights=str(pretrained_dirs["prot_t5"]), max_len=20)
    sequence = (SEQUENCES[0] * 3)[:50]  # windows [0, 20), [10, 30), [20, 40), [30, 50)
    ((_, (features,)),) = list(embed_sequences(encoder, [sequence], progress=False))
    assert features.shape == (3, 50, 32)
    first, last = encoder.embed([sequence[:20]])[:, 0], encoder.embed([sequence[30:]])[:, 0]
    torch.testing.assert_close(features[:, :10], first[:, :10])  # covered by window 0 only
    torch.testing.assert_close(features[:, 40:], last[:, 10:])  # by the last window only
    middle = (first[:, 10:20] + encoder.embed([sequence[10:30]])[:, 0, :10]) / 2
    torch.testing.assert_close(features[:, 10:20], middle)  # mean of the two windows


# What the hub repositories hold: masked-LM or encoder-decoder models, not the bare encoder.
HUB_CLASSES = {"hf_esm2": "EsmForMaskedLM", "prot_bert": "BertForMaskedLM",
               "prot_t5": "T5ForConditionalGeneration", "ankh": "T5ForConditionalGeneration"}


@pytest.mark.parametrize("family", sorted(HUB_CLASSES))
def test_the_encoder_of_a_masked_lm_or_encoder_decoder_checkpoint_is_read(family, tmp_path):
    import transformers

    from ptransfer.encoders.hf_families import hf_config

    torch.manual_seed(0)
    full = getattr(transformers, HUB_CLASSES[family])(hf_config(TINY_HF_ARCH[family])).eval()
    full.save_pretrained(str(tmp_path))
    write_tokenizer(family, tmp_path)
    encoder = make(family, weights=str(tmp_path))  # refuses a checkpoint lacking any tensor
    assert torch.equal(encoder.module_.get_input_embeddings().weight,
                       full.get_input_embeddings().weight)  # read, not re-initialised
    sequence = SEQUENCES[0]
    torch.testing.assert_close(encoder.embed([sequence])[:, 0],
                               plain_features(family, tmp_path, sequence), atol=1e-5, rtol=0)
