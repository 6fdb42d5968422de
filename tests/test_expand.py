"""Fast sweep expansion: every combination's config equals Hydra's own composition, in the
basic sweeper's order, with one compose per axis instead of one per combination."""

from __future__ import annotations

import random

import pytest
from cell_helpers import CONF
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ptransfer.sweep.expand import SweepExpander, combinations, group_checker, sweep_lists


def _expand(arguments: list[str], check=None, repository: bool = True):
    """(expander, [(combo, config as a dict)]) with Hydra's compose inside the context."""
    base = compose("config", overrides=[a for a in arguments if "," not in a],
                   return_hydra_config=True)
    params = base.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params) if params else {}
    loader = GlobalHydra.instance().config_loader()
    expander = SweepExpander(lambda o: compose("config", overrides=o),
                             sweep_lists(params, arguments), group_checker(loader), check=check,
                             repository=loader.repository if repository else None)
    return expander, [(c, OmegaConf.to_container(cfg, resolve=False)) for c, cfg in expander]


def _composed(combo: list[str]) -> dict:
    return OmegaConf.to_container(compose("config", overrides=combo), resolve=False)


@pytest.mark.parametrize("repository", [True, False])
def test_every_gb1_combination_equals_hydras_composition(tmp_path, repository):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        arguments = ["+experiment=gb1", f"results_dir={tmp_path}", "seed=3,4"]
        expander, configs = _expand(arguments, repository=repository)
        assert len(configs) == 3 * 3 * 2 * 2
        checked = configs if repository else random.Random(1).sample(configs, 6)
        for combo, config in checked:
            assert config == _composed(combo), combo
        # model, ablation, task: one compose each (plain files read from the repository)
        assert expander.n_composed == (4 if repository else 1 + 3 + 3 + 2)


@pytest.mark.parametrize("experiment", ["paper_ablations", "esm2_checkpoints"])
def test_big_presets_sampled_against_hydra_with_few_composes(tmp_path, experiment):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        expander, configs = _expand([f"+experiment={experiment}", f"results_dir={tmp_path}"])
        assert len(configs) == {"paper_ablations": 5 * 3 * 3 * 8,
                                "esm2_checkpoints": 8 * 14 * 3 * 3}[experiment]
        assert expander.n_composed <= 5
        for combo, config in random.Random(0).sample(configs, 6):
            assert config == _composed(combo), combo


def test_order_is_the_basic_sweepers(tmp_path):
    arguments = ["model=onehot,esm2_t6_8M", "seed=1,2", f"results_dir={tmp_path}",
                 "task=synthetic,gb1_sampled"]
    params = {"ablation": "pretrained,random_init", "seed": "7,8,9"}
    parser = OverridesParser.create()
    lines = [f"{k}={v}" for k, v in params.items()] + arguments
    (expected,) = BasicSweeper.split_arguments(parser.parse_overrides(lines), None)
    assert combinations(sweep_lists(params, arguments)) == expected
    assert len(expected) == 2 * 2 * 2 * 2  # the command line's seed replaced the params'


def test_axes_that_change_one_key_are_composed_in_full(tmp_path):
    # model= changes model.max_len, and model.max_len= is swept too: they overlap, so every
    # combination is composed (exactly) instead of assembled; aliases with a defaults list
    # (esm2_t6_8M) are composed too.
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        arguments = ["model=onehot,esm2_t6_8M", "model.max_len=5,null", f"results_dir={tmp_path}"]
        expander, configs = _expand(arguments)
        for combo, config in configs:
            assert config == _composed(combo), combo
        assert {c["model"]["max_len"] for _, c in configs} == {5, None}


def test_a_bad_value_is_caught_once_per_choice(tmp_path):
    from ptransfer.cell.config_checks import ConfigError, check_config

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(ConfigError, match="'seed'"):
            _expand(["seed=1,abc", f"results_dir={tmp_path}"],
                    check=lambda cfg: check_config(cfg, CONF))
