"""What rows record about a cell's configuration: checkpoint position on the pretraining axis
(step, fraction, order) and the settings comparability checks (the probe's own config)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from ptransfer.cell.rows import checkpoint_position, config_fields, head_config_hash
from ptransfer.cell.spec import cell_spec
from ptransfer.cli import CONF_DIR


@pytest.fixture()
def conf():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def test_the_papers_carp_checkpoints_carry_their_fractions(conf):
    cfg = compose("config", overrides=["+experiment=paper_checkpoints"])
    expected = {"eighth": (0.125, 0), "quarter": (0.25, 1), "half": (0.5, 2), "final": (1.0, 3)}
    for name, (fraction, order) in expected.items():
        position = checkpoint_position(cell_spec(cfg).encoder, name, None)
        assert (position["checkpoint_fraction"], position["checkpoint_order"]) == \
            (fraction, order), name
        assert position["checkpoint_step"] is None  # not published


def test_esm2_training_checkpoints_get_step_and_fraction_of_the_final_step(conf):
    cfg = compose("config", overrides=["model=esm2_t33_650M_UR50D_training"])
    mid = checkpoint_position(cell_spec(cfg).encoder, "step_250k", 250000)
    assert mid == {"checkpoint_step": 250000, "checkpoint_fraction": 0.5,
                   "checkpoint_order": 8}
    final = checkpoint_position(cell_spec(cfg).encoder, "final", None)
    assert final == {"checkpoint_step": 500000, "checkpoint_fraction": 1.0,
                     "checkpoint_order": 13}


def test_a_model_without_checkpoints_is_final_at_order_zero(conf):
    cfg = compose("config", overrides=["model=esm2_t6_8M_UR50D"])
    assert checkpoint_position(cell_spec(cfg).encoder, "final", None) == {
        "checkpoint_step": None, "checkpoint_fraction": 1.0, "checkpoint_order": 0}


def test_head_config_hash_follows_the_chosen_probe_parameters(conf):
    auto = compose("config", overrides=["head=auto"])
    ridge = compose("config", overrides=["head=ridge"])
    assert head_config_hash(cell_spec(auto).head, "ridge") == head_config_hash(cell_spec(ridge).head, "ridge")
    assert head_config_hash(cell_spec(auto).head, "ridge") != head_config_hash(cell_spec(auto).head, "logistic")
    grid = compose("config", overrides=["head=ridge", "head.ridge.alphas=[1.0,10.0]"])
    assert head_config_hash(cell_spec(grid).head, "ridge") != head_config_hash(cell_spec(ridge).head, "ridge")
    # a parameter of another probe does not change the ridge probe's identity
    other = compose("config", overrides=["head=auto", "head.linear.lr=0.1"])
    assert head_config_hash(cell_spec(other).head, "ridge") == head_config_hash(cell_spec(auto).head, "ridge")


def test_config_fields_record_extraction_settings(conf):
    cfg = compose("config", overrides=["extract.length_policy=truncate",
                                       "extract.pooled_dtype=float16"])
    fields = config_fields(cell_spec(cfg), "final", None, "ridge")
    assert fields["length_policy"] == "truncate" and fields["pooled_dtype"] == "float16"
    assert len(fields["head_config"]) == 12
