"""Weights resolution: hub cache, model.weights, intermediate checkpoints, clear failures.

Every test runs with TORCH_HOME in a fresh directory and PTRANSFER_OFFLINE=1 (conftest), so
nothing can reach the network; the download path is tested with a fake downloader.
"""

from __future__ import annotations

import logging
import shutil
import urllib.error
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from tiny_models import (
    build_pretrained,
    install_in_hub_cache,
    model_config,
    regression_path,
    write_checkpoint,
    write_tiny,
)

from ptransfer.encoders import weights as weights_module
from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.weights import (
    WeightsFileError,
    WeightsUnavailable,
    hub_file,
    read_checkpoint,
)

ABLATIONS = ["pretrained", "random_init", "stat_transfer"]
PROBE = ["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIK"]


def encoder_for(family: str, **overrides):
    """Instantiate from a model config exactly as the cell does (no load yet)."""
    config = OmegaConf.create(model_config(family, **overrides))
    return hydra.utils.instantiate(config, _convert_="all")


def load(family: str, ablation="pretrained", checkpoint=None, seed=0, **overrides):
    encoder = encoder_for(family, **overrides)
    return encoder.load(checkpoint or CheckpointRef(), ablation=ablation, seed=seed)


def copy_checkpoint(source: Path, directory: Path, name: str, regression=True) -> Path:
    target = directory / f"{name}.pt"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    if regression and regression_path(source).is_file():
        shutil.copy(regression_path(source), regression_path(target))
    return target


# --- where weights come from -----------------------------------------------------------


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("family", ["esm2", "carp"])
def test_hub_cache_loads_every_ablation(family, ablation, tiny_esm2_path, tiny_carp_path):
    path = {"esm2": tiny_esm2_path, "carp": tiny_carp_path}[family]
    cached = install_in_hub_cache(path)
    assert cached.parent == Path(torch.hub.get_dir()) / "checkpoints"
    features = load(family, ablation).embed(PROBE)
    reference = load(family, "pretrained", weights=str(path)).embed(PROBE)
    assert features.shape == reference.shape
    assert torch.equal(features, reference) == (ablation == "pretrained")


def test_hub_cache_for_esm1b(tiny_esm1b_path):
    install_in_hub_cache(tiny_esm1b_path)
    reference = load("esm1b", weights=str(tiny_esm1b_path)).embed(PROBE)
    torch.testing.assert_close(load("esm1b").embed(PROBE), reference, rtol=0, atol=0)


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_model_weights_file_with_any_name_and_no_regression_file(
    ablation, tiny_esm2_path, tmp_path, caplog
):
    local = copy_checkpoint(tiny_esm2_path, tmp_path, "my_finetuned_model", regression=False)
    with caplog.at_level(logging.INFO, logger="ptransfer.encoders"):
        encoder = load("esm2", ablation, weights=str(local))
    assert encoder.embed(PROBE).shape == (3, 2, 22, 32)
    if ablation != "random_init":
        assert "my_finetuned_model-contact-regression.pt not found" in caplog.text


def test_contact_regression_beside_the_checkpoint_is_loaded(tiny_esm2_path):
    saved = torch.load(regression_path(tiny_esm2_path), weights_only=True)["model"]
    module = load("esm2", weights=str(tiny_esm2_path)).module_
    torch.testing.assert_close(
        module.contact_head.regression.weight, saved["contact_head.regression.weight"]
    )


def test_model_weights_overrides_the_hub_cache(tmp_path):
    install_in_hub_cache(write_tiny("carp", tmp_path / "hub_copy", seed=1))
    local = write_tiny("carp", tmp_path / "local", seed=2)
    from_local = load("carp", weights=str(local)).embed(PROBE)
    from_hub = load("carp").embed(PROBE)
    assert not torch.equal(from_local, from_hub)
    assert torch.equal(from_local, load("carp", weights=str(local)).embed(PROBE))


def test_intermediate_checkpoint_file(tmp_path, tiny_esm2_path):
    install_in_hub_cache(tiny_esm2_path)
    early = write_tiny("esm2", tmp_path / "ckpt", seed=5, name="esm2_step1000")
    by_path = load("esm2", checkpoint=CheckpointRef("step1000", 1000, str(early))).embed(PROBE)
    by_name = load(
        "esm2",
        checkpoint=CheckpointRef("step1000"),
        checkpoints={"step1000": {"path": str(early), "step": 1000}},
    ).embed(PROBE)
    final = load("esm2").embed(PROBE)
    assert torch.equal(by_path, by_name)
    assert not torch.equal(by_path, final)
    assert torch.equal(by_path, load("esm2", weights=str(early)).embed(PROBE))


def test_random_init_needs_no_file_and_reads_none(monkeypatch):
    assert not (Path(torch.hub.get_dir()) / "checkpoints").exists()

    def no_reading(*args, **kwargs):
        raise AssertionError("random_init must not look for weights")

    monkeypatch.setattr(weights_module, "weights_file", no_reading)
    monkeypatch.setattr(weights_module, "read_checkpoint", no_reading)
    for family in ("esm2", "esm1b", "esm1", "carp"):
        encoder = load(family, "random_init", checkpoint=CheckpointRef("not_on_disk"))
        assert encoder.embed(["MKV"]).shape[:3] == (3, 1, 3)


# --- downloads (faked: no network in tests) ----------------------------------------------


def test_download_fills_the_hub_cache_then_loads(monkeypatch, tiny_esm2_path):
    monkeypatch.setenv("PTRANSFER_OFFLINE", "0")
    fetched = []

    def fake_download(url, destination, *args, **kwargs):
        fetched.append(url)
        source = regression_path(tiny_esm2_path) if "regression" in url else tiny_esm2_path
        shutil.copy(source, destination)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    features = load("esm2").embed(PROBE)
    base = "https://dl.fbaipublicfiles.com/fair-esm"
    assert fetched == [
        f"{base}/models/esm2_t2_tiny_UR50D.pt",
        f"{base}/regression/esm2_t2_tiny_UR50D-contact-regression.pt",
    ]
    assert torch.equal(features, load("esm2", weights=str(tiny_esm2_path)).embed(PROBE))
    load("esm2")  # now cached: no second download
    assert len(fetched) == 2


def test_failed_download_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("PTRANSFER_OFFLINE", "0")

    def unreachable(url, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(WeightsUnavailable, match="download failed: URLError"):
        load("carp")


def test_hub_urls_are_the_packages():
    assert hub_file("carp", "carp_640M").url == (
        "https://zenodo.org/record/6564798/files/carp_640M.pt?download=1"
    )
    assert hub_file("carp", "carp_640M").path.name == "carp_640M.pt"
    esm1b = hub_file("esm1b", "esm1b_t33_650M_UR50S")
    assert esm1b.url == "https://dl.fbaipublicfiles.com/fair-esm/models/esm1b_t33_650M_UR50S.pt"
    assert esm1b.path == Path(torch.hub.get_dir()) / "checkpoints" / "esm1b_t33_650M_UR50S.pt"


# --- clear failures ----------------------------------------------------------------------


def test_missing_hub_weights_name_the_expected_file_url_and_override():
    with pytest.raises(WeightsUnavailable) as caught:
        load("esm2")
    message = str(caught.value)
    expected = Path(torch.hub.get_dir()) / "checkpoints" / "esm2_t2_tiny_UR50D.pt"
    assert str(expected) in message
    assert "esm2_t2_tiny_UR50D-contact-regression.pt" in message
    assert "https://dl.fbaipublicfiles.com/fair-esm/models/esm2_t2_tiny_UR50D.pt" in message
    assert "model.weights=/path/esm2_t2_tiny_UR50D.pt" in message
    assert "PTRANSFER_OFFLINE=1" in message


def test_missing_model_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(WeightsUnavailable, match=f"model.weights={missing}: no such file"):
        load("carp", weights=str(missing))


def test_missing_intermediate_checkpoint_file_is_a_clear_error(tmp_path):
    checkpoint = CheckpointRef("half", None, str(tmp_path / "half.pt"))
    with pytest.raises(WeightsUnavailable, match="model.checkpoints.half.path=.*half.pt: no such"):
        load("carp", checkpoint=checkpoint)


def test_unknown_intermediate_checkpoint_is_a_clear_error():
    with pytest.raises(WeightsUnavailable, match=r"set model.checkpoints.half.path.*final, early"):
        load("carp", checkpoint=CheckpointRef("half"), checkpoints={"early": {"path": "x.pt"}})


def test_corrupt_file_names_the_file(tmp_path):
    corrupt = tmp_path / "esm2_t2_tiny_UR50D.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsFileError, match=f"{corrupt}: cannot be read as a PyTorch"):
        load("esm2", weights=str(corrupt))


def test_truncated_file_names_the_file(tmp_path, tiny_carp_path):
    truncated = tmp_path / "carp_tiny.pt"
    truncated.write_bytes(tiny_carp_path.read_bytes()[:500])
    with pytest.raises(WeightsFileError, match=f"{truncated}: cannot be read"):
        load("carp", weights=str(truncated))


class Payload:
    """Unpickling this runs code; a weights_only load must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_file_pickling_arbitrary_objects_is_refused_not_executed(tmp_path):
    marker = tmp_path / "code_ran"
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "payload": Payload(marker)}, unsafe)
    with pytest.raises(WeightsFileError, match=f"{unsafe}: cannot be read .*weights_only=True"):
        read_checkpoint(unsafe)
    assert not marker.exists()


def test_checkpoint_of_another_family_is_a_clear_error(tiny_carp_path, tiny_esm2_path):
    with pytest.raises(WeightsFileError, match=r"not a fair-esm ESM-2 .*missing key\(s\)"):
        load("esm2", weights=str(tiny_carp_path))
    with pytest.raises(WeightsFileError, match="not a sequence-models CARP checkpoint"):
        load("carp", weights=str(tiny_esm2_path))


def test_esm1b_checkpoint_for_an_esm1_config_is_a_clear_error(tiny_esm1b_path):
    with pytest.raises(WeightsFileError, match=r"args.arch='roberta_large' is not a esm1"):
        load("esm1", weights=str(tiny_esm1b_path))


def test_architecture_mismatch_names_the_config_keys(tiny_esm2_path):
    with pytest.raises(WeightsFileError, match="model.n_blocks=3 in the config but 2 in the file"):
        load("esm2", weights=str(tiny_esm2_path), n_blocks=3)


def test_parameter_count_mismatch_is_logged(tiny_carp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ptransfer.encoders"):
        load("carp", weights=str(tiny_carp_path), n_params=123)
    assert "model.n_params=123 but the module has 2270 parameters" in caplog.text


def test_tiny_checkpoints_use_the_packages_formats(tmp_path):
    """The fixtures save what the real loaders read (fair-esm dispatches on the stem)."""
    path = write_checkpoint("esm2", build_pretrained("esm2"), tmp_path / "esm2_t2_x_UR50D.pt")
    data = read_checkpoint(path)
    assert set(data) == {"model", "cfg"} and data["cfg"]["model"].encoder_layers == 2
    assert all(k.startswith("encoder.") for k in data["model"])
    assert set(read_checkpoint(regression_path(path))["model"]) == {
        "contact_head.regression.weight",
        "contact_head.regression.bias",
    }


@pytest.mark.parametrize("family", ["esm2", "carp"])
def test_a_failed_or_finished_download_leaves_no_lock_file(monkeypatch, family, tiny_esm2_path,
                                                           tiny_carp_path):
    # Issue 19 item 15: a stat_transfer run without weights left <name>.pt.lock in the cache.
    monkeypatch.setenv("PTRANSFER_OFFLINE", "0")

    def unreachable(url, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(WeightsUnavailable, match="download failed: URLError"):
        load(family, ablation="stat_transfer")
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    assert cache.is_dir() and list(cache.iterdir()) == []  # no .lock, no partial file

    source = {"esm2": tiny_esm2_path, "carp": tiny_carp_path}[family]
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dest, *a, **k:
                        shutil.copy(regression_path(source) if "regression" in url
                                    else source, dest))
    load(family, ablation="stat_transfer")
    assert not [p for p in cache.iterdir() if p.name.endswith(".lock")]
