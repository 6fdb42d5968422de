"""Every config composes; every model config instantiates; experiment presets expand."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ptransfer.cli import CONF_DIR
from ptransfer.encoders.base import Encoder
from ptransfer.sweep.plan import expand_sweep


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.fixture()
def conf():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


@pytest.mark.parametrize("group", ["task", "model", "ablation", "head"])
def test_every_option_composes(conf, group):
    names = _names(group)
    assert names, f"conf/{group}/ is empty"
    for name in names:
        cfg = compose("config", overrides=[f"{group}={name}"])
        assert cfg[group] is not None
        assert cfg.results_dir and cfg.data.root


def test_every_model_instantiates_without_weights(conf):
    for name in _names("model"):
        cfg = compose("config", overrides=[f"model={name}"])
        enc = instantiate(cfg.model, _convert_="all")
        assert isinstance(enc, Encoder), name
        assert enc.n_layers >= 1 and enc.dim >= 1, name
        if enc.family != "onehot":
            assert enc.n_layers == cfg.model.n_blocks + 1, name


def test_experiments_expand(conf):
    for name in _names("experiment"):
        cfg = compose("config", overrides=[f"+experiment={name}"], return_hydra_config=True)
        combos = expand_sweep(cfg, [])
        assert combos, name
        for combo in combos[:3]:
            compose("config", overrides=[f"+experiment={name}", *combo])


def test_config_dir_is_the_repository_conf():
    assert CONF_DIR == Path(__file__).resolve().parents[1] / "conf"
    assert (CONF_DIR / "config.yaml").is_file()


def test_unirep_size_preset_is_the_size_axis_with_ablations_and_one_hot(tmp_path):
    from ptransfer.sweep.plan import plan_cells

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=unirep_size"])
    assert cfg.extract.toks_per_batch == 32768
    cells = plan_cells(CONF_DIR, ["+experiment=unirep_size", f"results_dir={tmp_path}"])
    real = [c.cell_id.split("__") for c in cells if c.excluded is None]
    # per task: 3 sizes x (pretrained at seed 42 + 2 ablations x 3 seeds) + one-hot = 22
    assert len(real) == 4 * 22
    tasks = {"gb1_two_vs_rest", "gb1_low_vs_high", "gb1_sampled", "ss3"}
    assert {r[0] for r in real} == tasks
    for size in ("unirep_64", "unirep_256", "unirep_1900"):
        arms = {(r[3], r[4]) for r in real if r[1] == size}
        assert arms == {("pretrained", "s42")} | {(a, s) for a in ("random_init", "stat_transfer")
                                                  for s in ("s42", "s0", "s12345")}
    assert {(r[1], r[3], r[4]) for r in real if r[1] == "onehot"} == {("onehot", "pretrained",
                                                                       "s42")}
