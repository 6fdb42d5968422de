"""``ablation.scope``: ``reference`` changes exactly the tensors the paper's code changed.

Each tiny model is loaded through its Encoder from a checkpoint file in the package's real
format, once as pretrained and once ablated; the names whose tensors come out bit-equal to
the pretrained ones must be exactly the hand-written lists below (read off
microsoft/protein-transfer's ``reset_resample_param``; see ``encoders/ablation_scopes.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tiny_models import TINY_ARCH, build_pretrained, model_config

from ptransfer.cell.encoder import load_encoder
from ptransfer.cell.key import cell_key, encoder_identity
from ptransfer.cell.spec import cell_spec
from ptransfer.encoders.ablation_scopes import changed_names
from ptransfer.encoders.ablations import apply_ablation, needs_weights
from ptransfer.encoders.base import CheckpointRef

BLOCKS = range(TINY_ARCH["esm2"]["num_layers"])  # every tiny model has 2 blocks
SEED = 1


def per_block(*names: str) -> set[str]:
    return {f"layers.{i}.{name}" for i in BLOCKS for name in names}


LAYER_NORMS = per_block(*(f"{ln}.{p}" for ln in ("self_attn_layer_norm", "final_layer_norm")
                          for p in ("weight", "bias")))
INV_FREQ = per_block("self_attn.rot_emb.inv_freq")  # ESM-2 buffers
ONE_ENTRY = {"contact_head.regression.bias"}  # a permutation cannot change it
CARP_EDGES = {"model.embedder.embedder.weight", "model.embedder.up_embedder.conv.weight",
              "model.embedder.up_embedder.conv.bias", "model.last_norm.weight",
              "model.last_norm.bias", "model.decoder.conv.weight", "model.decoder.conv.bias"}

# family -> ablation -> names left exactly pretrained by ablation.scope=reference
UNTOUCHED = {
    "esm1": {
        "random_init": {"embed_tokens.weight", "embed_out", "embed_out_bias", *LAYER_NORMS, *per_block("self_attn.bias_k", "self_attn.bias_v")},
        "stat_transfer": {"embed_tokens.weight", "embed_out", "embed_out_bias", *ONE_ENTRY},
    },
    "esm1b": {
        # embed_tokens *is* lm_head.weight: xavier re-initialised / permuted with it.
        "random_init": {*LAYER_NORMS, "emb_layer_norm_before.weight",
                        "emb_layer_norm_before.bias", "emb_layer_norm_after.weight",
                        "emb_layer_norm_after.bias", "lm_head.bias", "lm_head.layer_norm.weight",
                        "lm_head.layer_norm.bias"},
        "stat_transfer": {*ONE_ENTRY},
    },
    "esm2": {
        "random_init": {*LAYER_NORMS, *INV_FREQ, "embed_tokens.weight", "lm_head.weight",
                        "lm_head.bias", "lm_head.dense.weight", "lm_head.dense.bias",
                        "lm_head.layer_norm.weight", "lm_head.layer_norm.bias",
                        "emb_layer_norm_after.weight", "emb_layer_norm_after.bias"},
        "stat_transfer": {*ONE_ENTRY},  # inv_freq permuted: a state_dict entry
    },
    "carp": {"random_init": CARP_EDGES, "stat_transfer": CARP_EDGES},
}
# full scope: every parameter changes; buffers never do.
UNTOUCHED_FULL = {"esm1": set(), "esm1b": set(), "esm2": INV_FREQ, "carp": set()}
FAMILIES = sorted(UNTOUCHED)
ABLATIONS = ["random_init", "stat_transfer"]


@pytest.fixture
def checkpoint_of(tiny_esm2_path, tiny_esm1b_path, tiny_esm1_path, tiny_carp_path):
    return {"esm2": tiny_esm2_path, "esm1b": tiny_esm1b_path, "esm1": tiny_esm1_path,
            "carp": tiny_carp_path}


def load(family, path, ablation, scope="full", seed=SEED):
    encoder = instantiate(model_config(family, weights=str(path)), _convert_="all")
    return encoder.load(CheckpointRef(), ablation=ablation, seed=seed, scope=scope)


def state(encoder) -> dict[str, torch.Tensor]:
    """Parameters and buffers by every name (tied aliases included).

    ESM-1's ``_float_tensor`` buffer is left out: an uninitialised dtype/device placeholder
    whose values mean nothing (a freshly built module holds arbitrary memory there).
    """
    module = encoder.module_
    named = [*module.named_parameters(remove_duplicate=False),
             *module.named_buffers(remove_duplicate=False)]
    return {n: t.detach().clone() for n, t in named if not n.endswith("_float_tensor")}


def unchanged(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {name for name in before if torch.equal(before[name], after[name])}


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_reference_scope_changes_exactly_the_papers_tensors(family, ablation, checkpoint_of):
    pretrained = state(load(family, checkpoint_of[family], "pretrained"))
    ablated = state(load(family, checkpoint_of[family], ablation, scope="reference"))
    assert unchanged(pretrained, ablated) == UNTOUCHED[family][ablation]
    if ablation == "stat_transfer":  # a permutation: each tensor keeps its values
        for name, value in ablated.items():
            assert torch.equal(value.flatten().sort().values,
                               pretrained[name].flatten().sort().values), name


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_full_scope_changes_every_parameter(family, ablation, checkpoint_of):
    pretrained = state(load(family, checkpoint_of[family], "pretrained"))
    ablated = state(load(family, checkpoint_of[family], ablation, scope="full"))
    expected = UNTOUCHED_FULL[family] | (ONE_ENTRY if ablation == "stat_transfer"
                                         and family != "carp" else set())
    assert unchanged(pretrained, ablated) == expected


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_declared_names_match_what_changes(family, ablation):
    """``changed_names`` (README table) names exactly what the reference ablation changes."""
    module = build_pretrained(family)
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers()]
    before = {n: t.detach().clone() for n, t in named}
    declared = changed_names(module, family, ablation, "reference")
    apply_ablation(module, ablation, SEED, scope="reference", family=family)
    after = dict([*module.named_parameters(remove_duplicate=False), *module.named_buffers()])
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved == (declared - ONE_ENTRY if ablation == "stat_transfer" else declared)


def test_esm1b_reference_random_init_uses_the_papers_inits(tiny_esm1b_path):
    """lm_head.weight (= embed_tokens) xavier-uniform, embed_positions N(0, 1), padding rows
    included; the constructor would give N(0, 1) tokens with a zero padding row."""
    module = load("esm1b", tiny_esm1b_path, "random_init", scope="reference").module_
    tokens = module.embed_tokens.weight
    assert module.lm_head.weight is tokens
    vocab, dim = tokens.shape
    bound = math.sqrt(6 / (vocab + dim))
    assert tokens.abs().max() <= bound and tokens.abs().max() > 0.9 * bound
    assert tokens[module.padding_idx].abs().sum() > 0
    positions = module.embed_positions.weight
    assert 0.8 < positions.std().item() < 1.2 and positions.abs().max() > 2 * bound
    assert positions[module.padding_idx].abs().sum() > 0


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_carp_reference_layer_zero_is_the_pretrained_layer_zero(ablation, tiny_carp_path):
    sequences = ["MKTAYIAKQR", "ACDEFG"]
    pretrained = load("carp", tiny_carp_path, "pretrained").embed(sequences)
    ablated = load("carp", tiny_carp_path, ablation, scope="reference").embed(sequences)
    assert torch.equal(ablated[0], pretrained[0])
    assert not torch.allclose(ablated[1:], pretrained[1:])


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_scope_is_seeded_and_deterministic(family, checkpoint_of):
    for ablation in ABLATIONS:
        first = state(load(family, checkpoint_of[family], ablation, "reference", seed=3))
        again = state(load(family, checkpoint_of[family], ablation, "reference", seed=3))
        other = state(load(family, checkpoint_of[family], ablation, "reference", seed=4))
        assert unchanged(first, again) == set(first)
        assert unchanged(first, other) != set(first)


@pytest.mark.parametrize("scope", ["full", "reference"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pretrained_is_a_no_op_in_either_scope(family, scope, checkpoint_of):
    plain = state(load(family, checkpoint_of[family], "pretrained"))
    scoped = state(load(family, checkpoint_of[family], "pretrained", scope=scope))
    assert unchanged(plain, scoped) == set(plain)
    assert changed_names(build_pretrained(family), family, "pretrained", scope) == set()


def test_reference_random_init_reads_the_weights_full_does_not():
    assert needs_weights("random_init", "reference")
    assert not needs_weights("random_init", "full")
    encoder = instantiate(model_config("esm2"), _convert_="all")  # no file anywhere
    encoder.load(CheckpointRef(), "random_init", seed=0, scope="full")
    with pytest.raises(FileNotFoundError, match="not available"):
        encoder.load(CheckpointRef(), "random_init", seed=0, scope="reference")


def test_unknown_scope_and_family_without_rules_are_clear_errors():
    with pytest.raises(ValueError, match=r"ablation.scope='paper' is not a known scope"):
        apply_ablation(build_pretrained("carp"), "random_init", 0, scope="paper", family="carp")
    with pytest.raises(ValueError, match=r"no rule for model.family='hf'"):
        apply_ablation(build_pretrained("carp"), "stat_transfer", 0, scope="reference",
                       family="hf")
    onehot = instantiate({"_target_": "ptransfer.encoders.onehot.OneHotEncoder"})
    onehot.load(CheckpointRef(), "pretrained", seed=0, scope="reference")
    with pytest.raises(ValueError, match="ablation.scope"):
        onehot.load(CheckpointRef(), "pretrained", seed=0, scope="half")


# --- the scope in the cell: key, store identity, encoder loading ----------------------

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["task=synthetic", *overrides])


@pytest.mark.parametrize("ablation", ["pretrained", "random_init", "stat_transfer"])
def test_scope_keys_the_cell_and_the_store_of_seeded_ablations(ablation):
    full = composed(f"ablation={ablation}")
    reference = composed(f"ablation={ablation}", "ablation.scope=reference")
    assert full.ablation.scope == "full"
    assert cell_key(cell_spec(full)).cell_id != cell_key(cell_spec(reference)).cell_id
    # Pretrained features do not depend on the scope (nor the seed): one shared store.
    same_store = encoder_identity(cell_spec(full).encoder) == encoder_identity(cell_spec(reference).encoder)
    assert same_store == (ablation == "pretrained")


def test_the_cell_loads_the_encoder_in_the_configured_scope(tiny_esm2_path):
    for scope in ("full", "reference"):
        cfg = composed("ablation=random_init", "seed=1", f"ablation.scope={scope}")
        OmegaConf.set_struct(cfg, False)
        cfg.model = model_config("esm2", weights=str(tiny_esm2_path))
        encoder, _ = load_encoder(cell_spec(cfg).encoder, "cpu")
        direct = load("esm2", tiny_esm2_path, "random_init", scope=scope, seed=1)
        assert unchanged(state(encoder), state(direct)) == set(state(direct))
