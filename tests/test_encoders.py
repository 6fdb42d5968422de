"""Encoders: per-residue features aligned with residues, layer counts, configs, one-hot rules."""

from __future__ import annotations

import functools
from argparse import Namespace
from pathlib import Path

import esm.pretrained
import hydra
import pytest
import sequence_models.pretrained
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tiny_models import TINY_ARCH, build_module, model_config

from ptransfer.encoders.base import CheckpointRef, Encoder
from ptransfer.encoders.carp import build_carp_module, carp_n_params, load_carp_module
from ptransfer.encoders.esm import build_esm_module, esm_n_params, load_esm_module
from ptransfer.encoders.onehot import CANONICAL, OneHotEncoder
from ptransfer.encoders.weights import count_parameters

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
FAMILIES = ["esm2", "esm1b", "esm1", "carp"]
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIK", "WY", "MKTAYIAKQRQ"]


@pytest.fixture()
def tiny_paths(tiny_esm2_path, tiny_esm1b_path, tiny_esm1_path, tiny_carp_path):
    return {
        "esm2": tiny_esm2_path,
        "esm1b": tiny_esm1b_path,
        "esm1": tiny_esm1_path,
        "carp": tiny_carp_path,
    }


def make_encoder(family: str, path: Path | None, ablation="pretrained", **overrides) -> Encoder:
    """Instantiate as the cell does (Hydra ``_target_``) and load."""
    config = OmegaConf.create(
        model_config(family, weights=str(path) if path else None, **overrides)
    )
    encoder = hydra.utils.instantiate(config, _convert_="all")
    return encoder.load(CheckpointRef(), ablation=ablation, seed=0)


def package_features(family: str, path: Path, sequences: list[str]) -> dict[int, torch.Tensor]:
    """Per-layer features straight from the package's own loader and forward (with specials)."""
    if family == "carp":
        module, collater = sequence_models.pretrained.load_model_and_alphabet(str(path))
        (tokens,) = collater([(s,) for s in sequences])
        out = module(tokens, repr_layers=list(range(3)))
        return {0: out[0], **out["representations"]}
    with torch.serialization.safe_globals([Namespace]):
        module, alphabet = esm.pretrained.load_model_and_alphabet_local(str(path))
    _, _, tokens = alphabet.get_batch_converter()([("", s) for s in sequences])
    return module.eval()(tokens, repr_layers=list(range(3)))["representations"]


# --- features --------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_shape_layer_count_and_dtype(family, tiny_paths):
    encoder = make_encoder(family, tiny_paths[family])
    features = encoder.embed(SEQUENCES)
    width = TINY_ARCH[family].get("embed_dim", TINY_ARCH[family].get("d_model"))
    assert encoder.n_layers == 3  # 2 blocks + the embedding layer
    assert features.shape == (3, len(SEQUENCES), max(map(len, SEQUENCES)), width)
    assert features.dtype == torch.float32
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_features_equal_single_sequence_features(family, tiny_paths):
    encoder = make_encoder(family, tiny_paths[family])
    batched = encoder.embed(SEQUENCES)
    for i, sequence in enumerate(SEQUENCES):
        alone = encoder.embed([sequence])
        assert alone.shape[2] == len(sequence)
        torch.testing.assert_close(batched[:, i, : len(sequence)], alone[:, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_features_are_the_packages_representations_without_specials(family, tiny_paths):
    """Same numbers as fair-esm / sequence-models give a user; BOS (and EOS) dropped."""
    features = make_encoder(family, tiny_paths[family]).embed(SEQUENCES)
    reference = package_features(family, tiny_paths[family], SEQUENCES)
    first = 0 if family == "carp" else 1  # ESM-1, ESM-1b and ESM-2 all prepend BOS
    for layer in range(3):
        for i, sequence in enumerate(SEQUENCES):
            expected = reference[layer][i, first : first + len(sequence)]
            torch.testing.assert_close(features[layer, i, : len(sequence)], expected)


def test_esm2_last_layer_alone_has_the_final_layer_norm(tiny_esm2_path):
    encoder = make_encoder("esm2", tiny_esm2_path)
    captured = {}
    norm = encoder.module_.emb_layer_norm_after
    hook = norm.register_forward_hook(lambda m, i, o: captured.update(inp=i[0], out=o))
    features = encoder.embed(["ACDEFGHIK"])
    hook.remove()
    after = captured["out"].transpose(0, 1)[0, 1:10]  # T x B x D -> residues of sequence 0
    before = captured["inp"].transpose(0, 1)[0, 1:10]
    torch.testing.assert_close(features[2, 0], after)
    assert not torch.allclose(features[2, 0], before)


def test_carp_last_layer_has_no_final_layer_norm(tiny_carp_path):
    encoder = make_encoder("carp", tiny_carp_path)
    captured = {}
    block = encoder.module_.model.embedder.layers[-1]
    hook = block.register_forward_hook(lambda m, i, o: captured.update(out=o))
    features = encoder.embed(["ACDEFGHIK"])
    hook.remove()
    torch.testing.assert_close(features[2, 0], captured["out"][0])


@pytest.mark.parametrize("family", ["esm2", "carp"])
def test_to_and_device(family, tiny_paths):
    encoder = make_encoder(family, tiny_paths[family])
    assert encoder.to("cpu") is encoder
    assert encoder.device == torch.device("cpu")
    assert encoder.embed(["MK"]).device == torch.device("cpu")


# --- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize("family", ["esm2", "carp"])
def test_sequence_longer_than_max_len_is_a_clear_error(family, tiny_paths):
    encoder = make_encoder(family, tiny_paths[family], max_len=5)
    with pytest.raises(ValueError, match=r"sequence 1 has 6 residues, more than max_len=5"):
        encoder.embed(["MKV", "MKVLAA"])


@pytest.mark.parametrize("family", ["esm2", "carp"])
def test_lowercase_residue_is_a_clear_error(family, tiny_paths):
    encoder = make_encoder(family, tiny_paths[family])
    with pytest.raises(ValueError, match=r"sequence 0 has character\(s\) \['k'\] outside"):
        encoder.embed(["MkV"])


def test_residue_outside_the_esm_alphabet_is_a_clear_error(tiny_esm2_path):
    with pytest.raises(ValueError, match=r"sequence 1 has character\(s\) \['J'\]"):
        make_encoder("esm2", tiny_esm2_path).embed(["MKV", "MJV"])


def test_empty_sequence_is_a_clear_error(tiny_carp_path):
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        make_encoder("carp", tiny_carp_path).embed(["MKV", ""])


def test_a_string_instead_of_a_list_is_a_clear_error(tiny_esm2_path):
    with pytest.raises(TypeError, match="list of sequences, not one string"):
        make_encoder("esm2", tiny_esm2_path).embed("MKV")


def test_embed_before_load_is_a_clear_error():
    encoder = hydra.utils.instantiate(OmegaConf.create(model_config("esm2")), _convert_="all")
    with pytest.raises(RuntimeError, match=r"call load\(\) before embed\(\)"):
        encoder.embed(["MKV"])


def test_unknown_ablation_is_a_clear_error(tiny_esm2_path):
    with pytest.raises(ValueError, match="ablation='frozen' is not a known ablation"):
        make_encoder("esm2", tiny_esm2_path, ablation="frozen")


def test_family_that_is_not_esm_is_a_clear_error():
    config = {**model_config("esm2"), "family": "carp"}
    encoder = hydra.utils.instantiate(OmegaConf.create(config), _convert_="all")
    with pytest.raises(ValueError, match="model.family='carp' is not an ESM family"):
        encoder.load(CheckpointRef(), ablation="random_init", seed=0)


def test_carp_config_missing_a_hyper_parameter_is_a_clear_error():
    arch = {k: v for k, v in TINY_ARCH["carp"].items() if k != "kernel_size"}
    with pytest.raises(
        ValueError, match=r"model.arch lacks CARP hyper-parameter\(s\) \['kernel_size'\]"
    ):
        make_encoder("carp", None, ablation="random_init", arch=arch)


def test_esm_config_with_a_wrong_hyper_parameter_is_a_clear_error():
    arch = {**TINY_ARCH["esm2"], "num_heads": 4}
    with pytest.raises(
        ValueError, match="model.arch cannot build a fair-esm esm2 model: .*num_heads"
    ):
        make_encoder("esm2", None, ablation="random_init", arch=arch)


def test_esm1b_config_naming_the_esm1_architecture_is_a_clear_error():
    arch = {**TINY_ARCH["esm1b"], "arch": "protein_bert_base"}
    with pytest.raises(ValueError, match="model.arch.arch='protein_bert_base': family esm1b needs"):
        make_encoder("esm1b", None, ablation="random_init", arch=arch)


# --- architectures and parameter counts --------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_built_module_has_the_loaded_modules_structure(family, tiny_paths):
    """random_init builds exactly the architecture the weights file describes."""
    if family == "carp":
        built, loaded = build_carp_module(TINY_ARCH[family]), load_carp_module(tiny_paths[family])
    else:
        built = build_esm_module(family, TINY_ARCH[family])
        loaded = load_esm_module(family, tiny_paths[family])
    shapes = {k: v.shape for k, v in loaded.state_dict().items()}
    assert {k: v.shape for k, v in built.state_dict().items()} == shapes


ARCH_VARIANTS = [
    ("esm2", {}),
    ("esm2", {"num_layers": 3, "embed_dim": 24, "attention_heads": 2}),
    ("esm1b", {}),
    ("esm1b", {"emb_layer_norm_before": False, "max_positions": 30}),
    ("esm1", {}),
    ("esm1", {"final_bias": False, "ffn_embed_dim": 48}),
    ("carp", {}),
    ("carp", {"slim": False, "kernel_size": 3, "n_layers": 3}),
]


@pytest.mark.parametrize(("family", "changes"), ARCH_VARIANTS)
def test_parameter_count_formula_matches_built_modules(family, changes):
    arch = {**TINY_ARCH[family], **changes}
    module = build_module(family, arch)
    if family == "carp":
        module = build_carp_module(arch)  # the CARP wrapper the encoder holds
        assert count_parameters(module) == carp_n_params(arch)
    else:
        assert count_parameters(module) == esm_n_params(family, arch)


# The packages' released models (their own names) -> family, and the short aliases.
PACKAGE_MODELS = {
    **dict.fromkeys(["esm1_t6_43M_UR50S", "esm1_t12_85M_UR50S", "esm1_t34_670M_UR50S"], "esm1"),
    "esm1b_t33_650M_UR50S": "esm1b",
    **dict.fromkeys(
        [
            "esm2_t6_8M_UR50D",
            "esm2_t12_35M_UR50D",
            "esm2_t30_150M_UR50D",
            "esm2_t33_650M_UR50D",
            "esm2_t36_3B_UR50D",
            "esm2_t48_15B_UR50D",
        ],
        "esm2",
    ),
    **dict.fromkeys(["carp_600k", "carp_38M", "carp_76M", "carp_640M"], "carp"),
}
ALIASES = {name.rsplit("_", 1)[0]: name for name in PACKAGE_MODELS if name.startswith("esm")}


@functools.cache
def compose_models() -> dict[str, OmegaConf]:
    """The package models, aliases and one-hot, composed through Hydra (once: ~1 s)."""
    names = [*PACKAGE_MODELS, *ALIASES, "onehot"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return {name: compose(overrides=[f"+model={name}"]).model for name in names}


@pytest.mark.parametrize("name", PACKAGE_MODELS)
def test_package_model_config_is_consistent(name):
    cfg = compose_models()[name]
    arch = cfg.arch
    assert (cfg.name, cfg.family) == (name, PACKAGE_MODELS[name])
    if cfg.family == "carp":
        blocks, width, count = arch.n_layers, arch.d_model, carp_n_params(arch)
        assert cfg._target_ == "ptransfer.encoders.carp.CarpEncoder"
    else:
        blocks = arch.get("num_layers", arch.get("layers"))
        width, count = arch.embed_dim, esm_n_params(cfg.family, arch)
        assert f"_t{blocks}_" in name and cfg.max_len == 1022
        assert cfg._target_ == "ptransfer.encoders.esm.EsmEncoder"
    assert (cfg.n_blocks, cfg.dim, cfg.n_params) == (blocks, width, count)
    assert cfg.weights is None and dict(cfg.checkpoints) == {}


def test_short_aliases_are_the_full_configs():
    models = compose_models()
    for alias, name in ALIASES.items():
        assert models[alias] == models[name], alias


def test_onehot_config():
    cfg = compose_models()["onehot"]
    assert cfg._target_ == "ptransfer.encoders.onehot.OneHotEncoder"
    assert (cfg.n_blocks, cfg.dim, cfg.n_params, cfg.max_len) == (0, 20, 0, None)


def test_carp_sizes_are_the_papers():
    models = compose_models()
    expected = {"carp_600k": 0.6e6, "carp_38M": 38e6, "carp_76M": 76e6, "carp_640M": 640e6}
    for name, size in expected.items():
        assert abs(models[name].n_params - size) / size < 0.02, name


@pytest.mark.parametrize("name", ["esm2_t6_8M_UR50D", "carp_600k"])
def test_small_real_configs_build_to_their_parameter_count(name):
    cfg = compose_models()[name]
    encoder = hydra.utils.instantiate(cfg, _convert_="all")
    encoder.load(CheckpointRef(), ablation="random_init", seed=0)
    assert count_parameters(encoder.module_) == cfg.n_params
    assert encoder.embed(["MKTAYIAK"]).shape == (cfg.n_blocks + 1, 1, 8, cfg.dim)


# --- one-hot -----------------------------------------------------------------------


def onehot() -> OneHotEncoder:
    cfg = compose_models()["onehot"]
    return hydra.utils.instantiate(cfg, _convert_="all").load(CheckpointRef(), "pretrained", 0)


def unit(residue: str) -> torch.Tensor:
    return torch.eye(20)[CANONICAL.index(residue)]


def test_onehot_metadata():
    encoder = onehot()
    assert (encoder.name, encoder.family) == ("onehot", "onehot")
    assert (encoder.n_layers, encoder.dim) == (1, 20)
    assert (encoder.n_params, encoder.max_len, encoder.pooling) == (0, None, "flatten")


def test_onehot_canonical_residues_and_padding():
    features = onehot().embed(["ACY", "W"])
    assert features.shape == (1, 2, 3, 20) and features.dtype == torch.float32
    expected = torch.stack([unit("A"), unit("C"), unit("Y")])
    assert torch.equal(features[0, 0], expected)
    assert torch.equal(features[0, 1, 0], unit("W"))
    assert torch.equal(features[0, 1, 1:], torch.zeros(2, 20))  # padding


def test_onehot_ambiguity_codes():
    features = onehot().embed(["BZJUOX"])[0, 0]
    half = 0.5
    assert torch.equal(features[0], half * unit("D") + half * unit("N"))
    assert torch.equal(features[1], half * unit("E") + half * unit("Q"))
    assert torch.equal(features[2], half * unit("I") + half * unit("L"))
    assert torch.equal(features[3], unit("C"))
    assert torch.equal(features[4], unit("K"))
    assert torch.equal(features[5], torch.full((20,), 1 / 20))
    torch.testing.assert_close(features.sum(-1), torch.ones(6))


@pytest.mark.parametrize("ablation", ["random_init", "stat_transfer"])
def test_onehot_refuses_ablations_other_than_pretrained(ablation):
    with pytest.raises(ValueError, match=f"ablation={ablation} is meaningless for the one-hot"):
        OneHotEncoder().load(CheckpointRef(), ablation, 0)


def test_onehot_unknown_character_is_a_clear_error():
    with pytest.raises(ValueError, match=r"sequence 1 has character\(s\) \['\*'\]"):
        onehot().embed(["MKV", "MK*"])


def test_onehot_wrong_dim_in_config_is_a_clear_error():
    with pytest.raises(ValueError, match="one-hot needs model.n_blocks=0, model.dim=20"):
        OneHotEncoder(dim=21).load(CheckpointRef(), "pretrained", 0)
