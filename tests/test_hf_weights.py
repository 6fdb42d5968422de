"""Where HfEncoder's weights and tokenizer come from: a save_pretrained folder, an installed
package, the hub cache (revisions, tokenizer-only for random_init), and the errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import pytest
import torch
from hf_models import (
    TINY_HF_REPO,
    build_hf,
    hf_model_config,
    install_in_hf_cache,
    write_pretrained,
    write_tokenizer,
)
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.hf import HfEncoder
from ptransfer.encoders.hf_weights import HfWeightsUnavailable, hf_cache_dir
from ptransfer.encoders.weights import WeightsFileError, WeightsUnavailable

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIK", "WY"]


def make(family: str, ablation: str = "pretrained", seed: int = 0, **overrides) -> HfEncoder:
    config = OmegaConf.create(hf_model_config(family, **overrides))
    return hydra.utils.instantiate(config, _convert_="all").load(CheckpointRef(), ablation, seed)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_saved")
    return {f: write_pretrained(build_hf(f), root / f, f)
            for f in ("hf_esm2", "esmc", "prot_bert", "antiberty")}


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


def test_hub_cache_and_local_directory_load_along_one_path(saved, monkeypatch):
    read = []
    original = HfEncoder.read_module
    monkeypatch.setattr(HfEncoder, "read_module",
                        lambda self, path: read.append(Path(path)) or original(self, path))
    snapshot = install_in_hf_cache(saved["prot_bert"], TINY_HF_REPO["prot_bert"])
    from_cache = make("prot_bert").embed(SEQUENCES)  # tokenizer and weights from the snapshot
    from_dir = make("prot_bert", weights=str(saved["prot_bert"])).embed(SEQUENCES)
    assert [p.resolve() for p in read] == [snapshot.resolve(), saved["prot_bert"].resolve()]
    torch.testing.assert_close(from_cache, from_dir, atol=0, rtol=0)


def test_random_init_reads_only_the_tokenizer_of_a_hub_model(saved, tmp_path):
    with pytest.raises(HfWeightsUnavailable, match=TINY_HF_REPO["prot_bert"]):
        make("prot_bert", ablation="random_init")  # no snapshot: no tokenizer either
    tokenizer_only = write_tokenizer("prot_bert", tmp_path / "tok")
    install_in_hf_cache(tokenizer_only, TINY_HF_REPO["prot_bert"])
    encoder = make("prot_bert", ablation="random_init", seed=1)
    assert encoder.embed(SEQUENCES).shape == (3, 3, len(SEQUENCES[0]), 32)
    with pytest.raises(HfWeightsUnavailable, match="missing .*safetensors"):
        make("prot_bert")  # the pretrained arm does need the weights


def test_revision_selects_the_cached_snapshot(saved):
    install_in_hf_cache(saved["esmc"], TINY_HF_REPO["esmc"], commit="a" * 40, ref="v1")
    assert make("esmc", revision="v1").embed(["WY"]).shape == (3, 1, 2, 32)
    with pytest.raises(HfWeightsUnavailable, match="revision 'v2'"):
        make("esmc", revision="v2")


def test_revision_changes_the_store_identity():
    from ptransfer.cell.key import encoder_identity
    from ptransfer.cell.spec import cell_spec

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = compose("config", overrides=["model=hf_esm2_t6_8M_UR50D"])
        pinned = compose("config", overrides=["model=hf_esm2_t6_8M_UR50D",
                                              "model.revision=abc123"])
    assert plain.model.revision is None
    assert encoder_identity(cell_spec(plain).encoder) != encoder_identity(cell_spec(pinned).encoder)


@pytest.fixture()
def fake_package(tmp_path, monkeypatch, saved):
    """An installed package ``tinyweights`` shipping a save_pretrained folder (AntiBERTy's way)."""
    root = tmp_path / "site"
    package = root / "tinyweights"
    (package / "trained").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    for item in saved["antiberty"].iterdir():
        (package / "trained" / item.name).write_bytes(item.read_bytes())
    monkeypatch.syspath_prepend(str(root))
    return {"name": "tinyweights", "path": "trained", "install": "pip install tinyweights==1"}


def test_weights_found_in_an_installed_package_without_importing_it(fake_package, saved):
    from_package = make("antiberty", package=fake_package, repo_id=None)
    assert "tinyweights" not in sys.modules  # found by find_spec, never imported
    from_dir = make("antiberty", weights=str(saved["antiberty"]), package=fake_package)
    torch.testing.assert_close(from_package.embed(SEQUENCES), from_dir.embed(SEQUENCES))


def test_missing_package_says_how_to_install_it():
    package = {"name": "no_such_weights_pkg", "path": "x", "install": "pip install --no-deps x==1"}
    with pytest.raises(HfWeightsUnavailable, match=r"not installed; install it with `pip install "
                                                   r"--no-deps x==1`.*model.weights"):
        make("antiberty", package=package, repo_id=None)


def test_directory_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(HfWeightsUnavailable, match=f"model.weights={tmp_path}.*safetensors"):
        make("esmc", weights=str(tmp_path))


def test_directory_of_another_architecture_is_a_clear_error(saved):
    with pytest.raises(WeightsFileError, match="model.n_blocks=4 in the config but 2"):
        make("esmc", weights=str(saved["esmc"]), n_blocks=4)
    with pytest.raises(WeightsFileError, match="'esm' model.*model_type='esmc'"):
        make("esmc", weights=str(saved["hf_esm2"]))


def test_weights_missing_a_tensor_are_refused(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    folder.mkdir()
    for item in saved["prot_bert"].iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    state = load_file(folder / "model.safetensors")
    dropped = next(k for k in state if "encoder.layer.1.output.dense.weight" in k)
    del state[dropped]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsFileError, match=r"lacks 1 tensor.*layer\.1\.output\.dense\.weight"):
        make("prot_bert", weights=str(folder))


def test_unknown_model_type_and_residue_are_clear_errors():
    from hydra.errors import InstantiationException

    # Refused when the config is instantiated (before any tokenizer or weights).
    with pytest.raises(InstantiationException, match="model.arch.model_type='gpt2'.*bert.*t5"):
        make("esmc", ablation="random_init", arch={"model_type": "gpt2"})
    encoder = make("esmc", ablation="random_init")
    with pytest.raises(ValueError, match="character"):
        encoder.embed(["MKJ*"])


def test_a_config_json_of_another_model_type_names_the_mismatch(saved, tmp_path):
    # Issue 28 item 14: a BERT folder whose config.json says t5 failed inside transformers
    # ("T5Model.__init__() ... 'add_pooling_layer'"). Named before transformers reads it.
    import json

    folder = tmp_path / "relabelled"
    folder.mkdir()
    for item in saved["prot_bert"].iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    with pytest.raises(WeightsFileError) as err:
        make("prot_bert", weights=str(folder))
    message = str(err.value)
    assert message.startswith(f"{folder}: config.json declares a 't5' model but the config "
                              "chosen says model.arch.model_type='bert'")
    assert "weight tensors are named as a 'bert' model's" in message
    assert "add_pooling_layer" not in message and "\n" not in message
