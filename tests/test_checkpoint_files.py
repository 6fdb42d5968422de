"""Checkpoints published at a URL (ESM-2 650M's training checkpoints): hub-cache files,
downloads, offline errors naming the file, steps into the rows, and the plan's listing."""

from __future__ import annotations

import shutil
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tiny_models import model_config

from ptransfer.cell.encoder import checkpoint_ref
from ptransfer.cell.spec import cell_spec
from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.checkpoint_files import checkpoint_status
from ptransfer.encoders.weights import WeightsUnavailable, resolve_checkpoint
from ptransfer.sweep.checkpoint_plan import checkpoint_lines
from ptransfer.sweep.plan import expand_sweep

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
URL = "https://example.org/models/esm2_t2_tiny_UR50D_checkpoint_{}.pt"
CHECKPOINTS = {"early": {"url": URL.format(1000), "step": 1000},
               "late": {"url": URL.format(5000), "step": 5000}}


def cache() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def test_url_checkpoint_resolves_to_its_hub_cache_file(tiny_esm2_path):
    cache().mkdir(parents=True)
    shutil.copy(tiny_esm2_path, cache() / "esm2_t2_tiny_UR50D_checkpoint_5000.pt")
    ref = resolve_checkpoint(CheckpointRef("late"), CHECKPOINTS)
    assert ref == CheckpointRef("late", 5000, str(cache() / "esm2_t2_tiny_UR50D_checkpoint_5000.pt"))
    config = OmegaConf.create(model_config("esm2", checkpoints=CHECKPOINTS))
    encoder = hydra.utils.instantiate(config, _convert_="all").load(ref, "pretrained", 0)
    reference = hydra.utils.instantiate(
        OmegaConf.create(model_config("esm2", weights=str(tiny_esm2_path))), _convert_="all"
    ).load(CheckpointRef(), "pretrained", 0)
    torch.testing.assert_close(encoder.embed(["MKTAY"]), reference.embed(["MKTAY"]))


def test_offline_missing_checkpoint_names_the_file_and_url():
    with pytest.raises(WeightsUnavailable) as info:
        resolve_checkpoint(CheckpointRef("early"), CHECKPOINTS)
    message = str(info.value)
    assert str(cache() / "esm2_t2_tiny_UR50D_checkpoint_1000.pt") in message
    assert URL.format(1000) in message and "model.checkpoints.early.path" in message
    assert "PTRANSFER_OFFLINE=1" in message


def test_online_checkpoint_downloads_into_the_hub_cache(monkeypatch, tiny_esm2_path):
    monkeypatch.delenv("PTRANSFER_OFFLINE")
    fetched = []

    def fake_download(url, dst, progress=True):  # the network, replaced by a copy
        fetched.append(url)
        shutil.copy(tiny_esm2_path, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    ref = resolve_checkpoint(CheckpointRef("early"), CHECKPOINTS)
    assert fetched == [URL.format(1000)] and Path(ref.path).is_file() and ref.step == 1000
    assert Path(ref.path).parent == cache()
    resolve_checkpoint(CheckpointRef("early"), CHECKPOINTS)
    assert len(fetched) == 1  # cached: not fetched again


def test_status_lists_checkpoints_in_step_order_without_fetching():
    cache().mkdir(parents=True)
    (cache() / "esm2_t2_tiny_UR50D_checkpoint_5000.pt").write_bytes(b"x")
    status = checkpoint_status({"late": CHECKPOINTS["late"], "final": {"step": 9000},
                                "early": CHECKPOINTS["early"]})
    assert [(s.name, s.step, s.present) for s in status] == [("early", 1000, False),
                                                             ("late", 5000, True)]


def _compose(overrides, hydra_config=False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra_config)


def test_the_official_esm2_checkpoints_are_issue_453s():
    cfg = _compose(["+experiment=esm2_checkpoints"], hydra_config=True)
    checkpoints = OmegaConf.to_container(cfg.model.checkpoints)
    steps = [10_000, 20_000, 30_000, 40_000, 50_000, *range(100_000, 450_001, 50_000)]
    assert [checkpoints[k]["step"] for k in checkpoints if k != "final"] == steps
    for entry in (checkpoints[k] for k in checkpoints if k != "final"):
        assert entry["url"] == ("https://dl.fbaipublicfiles.com/fair-esm/models/"
                                f"esm2_t33_650M_UR50D_checkpoint_{entry['step']}.pt")
    assert cfg.model.name == "esm2_t33_650M_UR50D" and cfg.model.n_blocks == 33
    assert set(cfg.hydra.sweeper.params.checkpoint.split(",")) == set(checkpoints)
    assert set(cfg.hydra.sweeper.params.ablation.split(",")) == {
        "pretrained", "random_init", "stat_transfer"}


def test_checkpoint_step_reaches_the_rows_reference(tmp_path):
    cache().mkdir(parents=True)
    (cache() / "esm2_t33_650M_UR50D_checkpoint_100000.pt").write_bytes(b"x")
    cfg = _compose(["model=esm2_t33_650M_UR50D_training", "checkpoint=step_100k"])
    ref = checkpoint_ref(cell_spec(cfg).encoder)  # what the cell writes to checkpoint / checkpoint_step
    assert (ref.name, ref.step) == ("step_100k", 100_000)
    final = checkpoint_ref(cell_spec(_compose(["model=esm2_t33_650M_UR50D_training"])).encoder)
    assert (final.name, final.step) == ("final", 500_000)


def test_plan_lists_the_checkpoints_steps_and_missing_files():
    cache().mkdir(parents=True)
    (cache() / "esm2_t33_650M_UR50D_checkpoint_20000.pt").write_bytes(b"x")
    lines = checkpoint_lines(CONF_DIR, ["+experiment=esm2_checkpoints", "task=gb1_sampled"],
                             expand_sweep)
    assert lines[0].startswith("checkpoints of esm2_t33_650M_UR50D: 13 intermediate")
    assert "12 file(s) missing" in lines[0]
    rows = lines[1:]
    assert [r.split()[0] for r in rows][:3] == ["step_10k", "step_20k", "step_30k"]
    assert "20000" in rows[1] and "present" in rows[1] and "MISSING" in rows[0]
    assert "esm2_t33_650M_UR50D_checkpoint_10000.pt" in rows[0]
