"""The typed fine-tuning config: conf/tune/*.yaml, defaults from the literature, bad values,
and the memory / time estimate a plan makes of a fine-tune."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ptransfer.tune.estimate import estimate_tune, lora_parameters
from ptransfer.tune.spec import TuneSpec

CONF = Path(__file__).resolve().parents[1] / "conf" / "tune"


def spec_of(name: str, length_policy: str = "window") -> TuneSpec:
    """``tune=<name>`` composed by Hydra (conf/config.yaml) -> spec."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF.parent), version_base="1.3"):
        cfg = compose("config", overrides=[f"tune={name}",
                                           f"extract.length_policy={length_policy}"])
    return TuneSpec.from_mapping(OmegaConf.to_container(cfg.tune, resolve=True))


def test_the_config_group_files_are_the_documented_defaults():
    assert spec_of("frozen") == TuneSpec(mode="frozen") and not spec_of("frozen").trains
    lora = spec_of("lora")
    assert (lora.mode, lora.lora_r, lora.lora_alpha, lora.lora_dropout) == ("lora", 8, 16, 0.05)
    assert lora.head_dropout == 0.2 and lora.learning_rates is None
    assert lora == TuneSpec(mode="lora")  # the yaml repeats the dataclass defaults
    assert spec_of("full") == TuneSpec(mode="full")
    # lora and full take frozen.yaml's settings: a sweep over tune= accepts tune.* overrides
    assert OmegaConf.load(CONF / "full.yaml")["defaults"] == ["frozen", "_self_"]
    assert spec_of("full", "truncate").length_policy == "truncate"  # one setting: extract's


def test_default_learning_rate_grids_per_mode_and_pretraining():
    assert TuneSpec(mode="lora").learning_rates_for(pretrained=True) == (3e-4, 1e-3)
    assert TuneSpec(mode="full").learning_rates_for(pretrained=True) == (2e-5, 1e-4)
    assert TuneSpec(mode="full").learning_rates_for(pretrained=False) == (1e-4, 5e-4)
    given = TuneSpec(mode="full", learning_rates=[1e-3])
    assert given.learning_rates == (1e-3,) and given.learning_rates_for(False) == (1e-3,)
    with pytest.raises(ValueError, match="^tune.mode=frozen trains nothing"):
        TuneSpec().learning_rates_for(True)


@pytest.mark.parametrize(("values", "message"), [
    ({"mode": "adapters"}, r"^tune.mode='adapters': choose one of \('frozen', 'lora', 'full'\)$"),
    ({"lora_r": 0}, r"^tune.lora_r=0: must be > 0$"),
    ({"patience": -1}, r"^tune.patience=-1: must be > 0$"),
    ({"head_dropout": 1.0}, r"^tune.head_dropout=1.0: must be in \[0, 1\)$"),
    ({"learning_rates": []}, r"^tune.learning_rates=\[\]: give one or more positive rates"),
    ({"learning_rates": [1e-3, 0]}, r"^tune.learning_rates=\[0.001, 0\]"),
    ({"precision": "fp16"}, r"^tune.precision='fp16': choose one of"),
    ({"warmup_steps": -5}, r"^tune.warmup_steps=-5: must be >= 0$"),
    ({"lora_rank": 4}, r"^tune.lora_rank is not a fine-tuning setting; known: "),
    ({"max_epochs": "many"}, r"^tune.max_epochs='many': expected an integer$"),
    ({"max_epochs": 2.5}, r"^tune.max_epochs=2.5: expected an integer$"),
    ({"patience": True}, r"^tune.patience=True: expected an integer$"),
    ({"gradient_checkpointing": 1}, r"^tune.gradient_checkpointing=1: expected true or false$"),
    ({"lora_alpha": "16"}, r"^tune.lora_alpha='16': expected a number$"),
])
def test_a_bad_value_is_one_line_naming_the_key(values, message):
    with pytest.raises(ValueError, match=message):
        TuneSpec.from_mapping(values)


def test_the_spec_is_frozen_and_round_trips_through_plain_values():
    spec = TuneSpec(mode="lora", learning_rates=(3e-4,), lora_r=4, lora_alpha=1)
    with pytest.raises(AttributeError):
        spec.mode = "full"  # type: ignore[misc]
    assert TuneSpec.from_mapping(spec.as_dict()) == spec
    assert spec.as_dict()["learning_rates"] == [3e-4]


def test_the_memory_and_time_estimate_by_hand():
    # AntiBERTy-like: 25.5M parameters, 8 blocks of width 512
    n, blocks, dim, toks = 25_496_064, 8, 512, 4096
    head = 512 * 512 + 512 + 512 + 1
    full = estimate_tune("full", n, blocks, dim, toks, train_tokens=1000, eval_tokens=200,
                         test_tokens=300, n_rates=2, max_epochs=20, bf16=True)
    assert full.weight_bytes == 4 * n
    assert full.state_bytes == 12 * (n + head)
    assert full.activation_bytes == toks * blocks * 24 * dim * 2
    assert full.flops == 2 * 20 * (6 * n * 1000 + 2 * n * 200) + 2 * 2 * n * 500
    assert full.seconds(100) == pytest.approx(full.flops / 1e14)
    assert lora_parameters(blocks, dim, 8) == 8 * 4 * 8 * 1024
    lora = estimate_tune("lora", n, blocks, dim, toks, 1000, 200, 300, 2, 20, lora_r=8,
                         bf16=False, gradient_checkpointing=True)
    assert lora.state_bytes == 12 * (8 * 4 * 8 * 1024 + head)
    assert lora.activation_bytes == toks * (blocks * dim * 4 + 24 * dim * 4)
    assert lora.flops == 2 * 20 * (4 * n * 1000 + 2 * n * 200) + 2 * 2 * n * 500
    assert "GB" in full.describe()
    with pytest.raises(ValueError, match="^tune.mode='frozen'"):
        estimate_tune("frozen", n, blocks, dim, toks, 1, 1, 1, 1, 1)


def test_the_torch_free_family_list_is_the_encoders_one():
    from ptransfer.encoders.weights import ESM_FAMILIES
    from ptransfer.tune.targets import FAIR_ESM_FAMILIES

    assert FAIR_ESM_FAMILIES == ESM_FAMILIES
