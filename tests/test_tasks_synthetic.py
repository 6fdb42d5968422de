"""The synthetic landscape: deterministic, the documented shape, learnable, fast."""

from __future__ import annotations

import time
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.stats import spearmanr

from ptransfer.tasks.base import TaskDataError
from ptransfer.tasks.synthetic import make_landscape_task

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"


@pytest.fixture(autouse=True)
def _torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.fixture(scope="module")
def task():
    return hydra.utils.instantiate(OmegaConf.load(CONF / "synthetic.yaml"), _convert_="all")


def test_shape_of_the_landscape(task):
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 420, "val": 90, "test": 90}
    assert (task.level, task.kind, task.metric) == ("protein", "regression", "spearman")
    parent = task.info["parent"]
    sites = {s - 1 for s in task.info["sites"]}
    assert len(parent) == 40 and len(sites) == 6
    every = task.all_sequences()
    assert len(every) == 600 and parent not in every
    for sequence in every:
        changed = {i for i, (a, b) in enumerate(zip(sequence, parent)) if a != b}
        assert changed <= sites and 1 <= len(changed) <= 4


def test_deterministic_per_seed(task):
    again = make_landscape_task(seed=0)
    other = make_landscape_task(seed=1)
    for split in task.splits:
        assert again.splits[split].sequences == task.splits[split].sequences
        np.testing.assert_array_equal(again.splits[split].targets, task.splits[split].targets)
    assert other.info["parent"] != task.info["parent"]


def test_additive_model_on_one_hot_features_learns_it(task):
    # The landscape is mostly additive: a least-squares fit on the mutated-site one-hots
    # must rank test variants well (a check that targets follow the sequences).
    sites = [s - 1 for s in task.info["sites"]]

    def features(split):
        letters = "ACDEFGHIKLMNPQRSTVWY"
        x = np.zeros((len(split), len(sites) * 20 + 1))
        for row, seq in enumerate(split.sequences):
            for k, site in enumerate(sites):
                x[row, k * 20 + letters.index(seq[site])] = 1.0
        x[:, -1] = 1.0
        return x

    coef, *_ = np.linalg.lstsq(features(task.splits["train"]), task.splits["train"].targets,
                               rcond=None)
    predicted = features(task.splits["test"]) @ coef
    assert spearmanr(predicted, task.splits["test"].targets).statistic > 0.6


def test_loads_well_under_a_second():
    started = time.perf_counter()
    make_landscape_task(seed=3)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("kwargs, key", [({"n_sites": 50}, "n_sites"),
                                         ({"max_mutations": 7}, "max_mutations"),
                                         ({"n_sites": 1, "max_mutations": 1, "n_variants": 600},
                                          "n_variants"),
                                         ({"fractions": [0.5, 0.5]}, "fractions")])
def test_bad_config(kwargs, key):
    with pytest.raises(TaskDataError, match=rf"task\.{key}"):
        make_landscape_task(**kwargs)
