"""transformers encoders (hub ESM-2, ESM C): equivalence with fair-esm, batching, ablations,
weights from a save_pretrained directory or the hub cache, offline errors, configs."""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import pytest
import torch
from hf_models import (
    HF_FAMILIES,
    TINY_HF_ARCH,
    TINY_HF_KWARGS,
    TINY_HF_REPO,
    build_hf,
    esm2_to_transformers,
    hf_model_config,
    install_in_hf_cache,
    write_pretrained,
)
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tiny_models import model_config

from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.esm import load_esm_module
from ptransfer.encoders.hf import HfEncoder, hf_config, hf_n_params
from ptransfer.encoders.hf_weights import HfWeightsUnavailable, hf_cache_dir
from ptransfer.encoders.weights import WeightsFileError, WeightsUnavailable

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIK", "WY", "MKTAYIAKQRQ", "LAGVSERTIDPKQNFYMHWC"]


def make(family: str, ablation: str = "pretrained", seed: int = 0, **overrides) -> HfEncoder:
    """Instantiate as the cell does (Hydra ``_target_``) and load."""
    config = OmegaConf.create(hf_model_config(family, **overrides))
    encoder = hydra.utils.instantiate(config, _convert_="all")
    return encoder.load(CheckpointRef(), ablation=ablation, seed=seed)


@pytest.fixture(scope="module")
def pretrained_dirs(tmp_path_factory):
    """family -> a save_pretrained directory of a perturbed tiny model."""
    root = tmp_path_factory.mktemp("hf_tiny")
    return {f: write_pretrained(build_hf(f), root / f) for f in HF_FAMILIES}


def test_fair_esm_and_transformers_esm2_give_the_same_features(tmp_path, tiny_esm2_path):
    # The fair-esm file and the converted transformers directory hold the same weights.
    module = load_esm_module("esm2", tiny_esm2_path)  # the file's weights, as fair-esm reads them
    converted = write_pretrained(esm2_to_transformers(module), tmp_path)
    fair = hydra.utils.instantiate(
        OmegaConf.create(model_config("esm2", weights=str(tiny_esm2_path))), _convert_="all"
    ).load(CheckpointRef(), "pretrained", 0)
    hf = make("hf_esm2", weights=str(converted))
    expected, found = fair.embed(SEQUENCES), hf.embed(SEQUENCES)
    assert found.shape == expected.shape == (3, len(SEQUENCES), max(map(len, SEQUENCES)), 32)
    for i, sequence in enumerate(SEQUENCES):  # every layer, real residues only
        n = len(sequence)
        torch.testing.assert_close(found[:, i, :n], expected[:, i, :n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_batched_features_equal_single_sequence_features(family, pretrained_dirs):
    encoder = make(family, weights=str(pretrained_dirs[family]))
    batch = encoder.embed(SEQUENCES)
    assert not torch.isnan(batch).any()
    for i, sequence in enumerate(SEQUENCES):
        single = encoder.embed([sequence])[:, 0]
        torch.testing.assert_close(batch[:, i, : len(sequence)], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_features_are_hidden_states_without_specials(family, pretrained_dirs):
    # Reference: the transformers forward on one sequence, <cls> ... <eos> by hand.
    encoder = make(family, weights=str(pretrained_dirs[family]))
    module = build_hf(family)
    ids = torch.tensor([[0] + [encoder.vocab_[c] for c in SEQUENCES[1]] + [2]])
    with torch.no_grad():
        states = module(input_ids=ids, output_hidden_states=True).hidden_states
    expected = torch.stack([h[0, 1:-1] for h in states])
    assert len(states) == encoder.n_layers == 3
    torch.testing.assert_close(encoder.embed([SEQUENCES[1]])[:, 0], expected)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_last_layer_alone_has_the_final_norm(family, pretrained_dirs):
    encoder = make(family, weights=str(pretrained_dirs[family]))
    module = encoder.module_
    blocks = module.encoder.layer if family == "hf_esm2" else module.layers
    norm = module.encoder.emb_layer_norm_after if family == "hf_esm2" else module.norm
    captured = []
    handle = blocks[-1].register_forward_hook(lambda _m, _i, out: captured.append(out))
    features = encoder.embed([SEQUENCES[0]])[:, 0]
    handle.remove()
    pre_norm = captured[0][0] if isinstance(captured[0], tuple) else captured[0]
    with torch.no_grad():
        torch.testing.assert_close(features[-1], norm(pre_norm)[0, 1:-1])
        assert (features[-2] - norm(features[-2])).abs().max() > 1e-2  # no norm before


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_random_init_is_a_fresh_build_under_that_seed(family):
    from transformers import AutoModel

    rng = torch.random.get_rng_state()
    encoder = make(family, ablation="random_init", seed=7)  # no weights anywhere: no read
    assert torch.equal(torch.random.get_rng_state(), rng)  # caller's stream untouched
    torch.manual_seed(7)
    fresh = AutoModel.from_config(hf_config(TINY_HF_ARCH[family]), **TINY_HF_KWARGS[family])
    state, expected = encoder.module_.state_dict(), fresh.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    other = make(family, ablation="random_init", seed=8).module_.state_dict()
    key = next(k for k in expected if k.endswith("weight") and expected[k].ndim == 2)
    assert not torch.equal(other[key], state[key])


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


def test_reference_scope_is_a_clear_error():
    config = OmegaConf.create(hf_model_config("esmc"))
    encoder = hydra.utils.instantiate(config, _convert_="all")
    with pytest.raises(ValueError, match="ablation.scope='reference'.*esmc"):
        encoder.load(CheckpointRef(), "random_init", 0, scope="reference")


@pytest.mark.parametrize("offline_env", ["HF_HUB_OFFLINE", "PTRANSFER_OFFLINE"])
def test_offline_missing_model_names_repo_and_cache(offline_env, monkeypatch):
    other = {"HF_HUB_OFFLINE": "PTRANSFER_OFFLINE", "PTRANSFER_OFFLINE": "HF_HUB_OFFLINE"}
    monkeypatch.delenv(other[offline_env])  # either switch alone forbids the download
    with pytest.raises(HfWeightsUnavailable) as info:
        make("hf_esm2")
    message = str(info.value)
    assert isinstance(info.value, WeightsUnavailable)
    assert TINY_HF_REPO["hf_esm2"] in message and str(hf_cache_dir()) in message
    assert "huggingface-cli download" in message and "model.weights" in message
    assert "downloads are disabled" in message  # refused at once, never tried the network
    assert str(hf_cache_dir()).startswith(os.environ["HF_HOME"])  # the isolated test cache


def test_hub_cache_and_local_directory_load_along_one_path(pretrained_dirs, monkeypatch):
    read = []
    original = HfEncoder.read_module
    monkeypatch.setattr(HfEncoder, "read_module",
                        lambda self, path: read.append(Path(path)) or original(self, path))
    snapshot = install_in_hf_cache(pretrained_dirs["esmc"], TINY_HF_REPO["esmc"])
    from_cache = make("esmc").embed(SEQUENCES)
    from_dir = make("esmc", weights=str(pretrained_dirs["esmc"])).embed(SEQUENCES)
    assert [p.resolve() for p in read] == [snapshot.resolve(), pretrained_dirs["esmc"].resolve()]
    torch.testing.assert_close(from_cache, from_dir, atol=0, rtol=0)


def test_revision_selects_the_cached_snapshot(pretrained_dirs):
    install_in_hf_cache(pretrained_dirs["esmc"], TINY_HF_REPO["esmc"], commit="a" * 40,
                        ref="v1")
    assert make("esmc", revision="v1").embed(["WY"]).shape == (3, 1, 2, 32)
    with pytest.raises(HfWeightsUnavailable, match="revision 'v2'"):
        make("esmc", revision="v2")


def test_revision_changes_the_store_identity():
    from ptransfer.grid.cell import encoder_identity

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = compose("config", overrides=["model=hf_esm2_t6_8M_UR50D"])
        pinned = compose("config", overrides=["model=hf_esm2_t6_8M_UR50D",
                                              "model.revision=abc123"])
    assert plain.model.revision is None
    assert encoder_identity(plain) != encoder_identity(pinned)


def test_directory_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(HfWeightsUnavailable, match=f"model.weights={tmp_path}.*safetensors"):
        make("esmc", weights=str(tmp_path))


def test_directory_of_another_architecture_is_a_clear_error(pretrained_dirs):
    with pytest.raises(WeightsFileError, match="model.n_blocks=4 in the config but 2"):
        make("esmc", weights=str(pretrained_dirs["esmc"]), n_blocks=4)
    with pytest.raises(WeightsFileError, match="'esm' model.*model_type='esmc'"):
        make("esmc", weights=str(pretrained_dirs["hf_esm2"]))


def test_unknown_model_type_and_residue_are_clear_errors():
    with pytest.raises(ValueError, match="model.arch.model_type='bert'"):
        make("esmc", ablation="random_init", arch={"model_type": "bert"})
    encoder = make("esmc", ablation="random_init")
    with pytest.raises(ValueError, match="character"):
        encoder.embed(["MKJ*"])


HUB_CONFIGS = sorted(p.stem for p in CONF_DIR.glob("model/*.yaml")
                     if "HfEncoder" in p.read_text())


def test_every_hub_series_has_a_config():
    expected = {f"hf_esm2_t{t}_UR50D" for t in ("6_8M", "12_35M", "30_150M", "33_650M",
                                                 "36_3B", "48_15B")}
    assert expected | {"esmc_300m", "esmc_600m"} <= set(HUB_CONFIGS)


@pytest.mark.parametrize("name", HUB_CONFIGS)
def test_hub_config_is_consistent(name):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"))
    arch = cfg["arch"]
    assert cfg["n_blocks"] == arch["num_hidden_layers"] and cfg["dim"] == arch["hidden_size"]
    assert "revision" in cfg and cfg["revision"] is None and cfg["attn_implementation"] == "sdpa"
    assert cfg["repo_id"].split("/")[1].lower().replace("-", "_") in name.lower()


@pytest.mark.parametrize("name", ["hf_esm2_t6_8M_UR50D", "hf_esm2_t12_35M_UR50D", "esmc_300m"])
def test_hub_config_parameter_count_is_the_built_modules(name):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"))
    assert cfg["n_params"] == hf_n_params(cfg["arch"], cfg["model_kwargs"])


def test_long_sequences_are_windowed_by_the_extraction(pretrained_dirs):
    from ptransfer.embed.extract import embed_sequences

    encoder = make("esmc", weights=str(pretrained_dirs["esmc"]), max_len=20)
    sequence = (SEQUENCES[0] * 3)[:50]  # windows [0, 20), [10, 30), [20, 40), [30, 50)
    ((_, (features,)),) = list(embed_sequences(encoder, [sequence], progress=False))
    assert features.shape == (3, 50, 32)
    first, last = encoder.embed([sequence[:20]])[:, 0], encoder.embed([sequence[30:]])[:, 0]
    torch.testing.assert_close(features[:, :10], first[:, :10])  # covered by window 0 only
    torch.testing.assert_close(features[:, 40:], last[:, 10:])  # by the last window only
    middle = (first[:, 10:20] + encoder.embed([sequence[10:30]])[:, 0, :10]) / 2
    torch.testing.assert_close(features[:, 10:20], middle)  # mean of the two windows
