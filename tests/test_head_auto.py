"""head=auto resolves per task, never per encoder: one probe family for every encoder of a task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ptransfer.cell.spec import TaskRef, cell_spec, planned_head
from ptransfer.cell.task_data import check_declared_shape
from ptransfer.encoders.base import CheckpointRef
from ptransfer.heads.fit_layers import AUTO_HEADS, resolve_head
from ptransfer.heads.fit_streaming import fit_streaming
from ptransfer.tasks.base import IGNORE, Split, Task

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
# What the paper's design needs per task, written out by hand (not read from AUTO_HEADS).
EXPECTED = {"ss3": "streaming", "scl_balanced": "logistic"}


def test_every_model_with_every_task_gets_one_head_per_task():
    """Every conf/model x every conf/task. Each config of a group is composed once (Hydra's
    compose API, ~0.1 s each); a pair is the task's composed config with the model's node put
    in. That equals composing the pair because a model config touches nothing but ``model``:
    checked below (its composed head and task nodes equal the defaults')."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        default = compose("config")
        models = {m: compose("config", overrides=[f"model={m}"]) for m in MODELS}
        # task=csv needs its file (its name defaults to the file's stem): any path composes.
        tasks = {t: compose("config", overrides=[f"task={t}"]
                            + (["task.path=mine.csv"] if t == "csv" else [])) for t in TASKS}
    for name, cfg in models.items():
        assert cfg.head == default.head and cfg.task == default.task, name
    heads: dict[str, set[str]] = {t: set() for t in TASKS}
    for task, task_cfg in tasks.items():
        for model_cfg in models.values():
            pair = task_cfg.copy()
            OmegaConf.set_struct(pair, False)
            pair.model = model_cfg.model  # the node replaced, not merged into onehot's
            assert pair.head.name == "auto" and pair.model.name == model_cfg.model.name
            heads[task].add(planned_head(pair))
    assert len(MODELS) >= 20 and len(TASKS) >= 9  # the enumeration really covered the configs
    assert all(len(found) == 1 for found in heads.values()), heads
    resolved = {task: found.pop() for task, found in heads.items()}
    for task, head in resolved.items():
        assert head == EXPECTED.get(task, "ridge"), (task, head)


def test_explicit_linear_stays_available_per_residue():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["task=ss3", "model=esm2_t33_650M", "head=linear"])
        assert planned_head(cfg) == "linear"
        bad = compose("config", overrides=["task=gb1_sampled", "head=linear"])
        with pytest.raises(ValueError, match="head=linear does not fit task 'gb1_sampled'"):
            planned_head(bad)


def _toy_residue_task(seed: int = 0) -> Task:
    rng = np.random.default_rng(seed)
    aa = np.array(list("ACDEFGHIKLMNPQRSTVWY"))

    def split(n):
        seqs = ["".join(rng.choice(aa, size=rng.integers(10, 30))) for _ in range(n)]
        labels = [np.array([0 if a in "AELMQKRH" else 1 if a in "VIYFWT" else 2 for a in s])
                  for s in seqs]
        for y in labels:
            y[rng.random(len(y)) < 0.1] = IGNORE
        return Split(seqs, labels)

    return Task("toy_ss", "residue", "classification",
                {"train": split(40), "val": split(15), "test": split(15)},
                dataset="toy", metric="accuracy", classes=["H", "E", "C"])


def test_loaded_shapes_agree_with_declared_ones(tmp_path):
    """The plan's config-only rule and run_cell's rule on the loaded task give the same head."""
    csv = tmp_path / "t.csv"
    csv.write_text("sequence,target,set\nACDE,a,train\nACDF,b,train\nACDG,a,val\nACDH,b,test\n")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for overrides in (["task=synthetic"],
                          ["task=csv", f"task.path={csv}", "task.kind=classification"]):
            cfg = compose("config", overrides=overrides)
            task = instantiate(cfg.task, _convert_="all")
            check_declared_shape(cell_spec(cfg).task, task)
            assert resolve_head(cell_spec(cfg).head, task) == planned_head(cfg)
        cfg = compose("config", overrides=["task=ss3"])
    assert cell_spec(cfg).task.declared_shape == ("residue", "classification")
    assert resolve_head(cell_spec(cfg).head, _toy_residue_task()) == planned_head(cfg) == "streaming"
    wrong = TaskRef({"_target_": "x.load", "name": "toy_ss"}, None)
    with pytest.raises(ValueError, match="loaded as residue classification but its config"):
        check_declared_shape(wrong, _toy_residue_task())
    assert set(AUTO_HEADS.values()) == {"ridge", "logistic", "streaming"}


def test_streaming_probe_runs_on_one_hot_without_any_model():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["model=onehot", "extract.progress=false"])
    encoder = instantiate(cfg.model, _convert_="all").load(CheckpointRef(), "pretrained", 0)
    task = _toy_residue_task()
    fits = fit_streaming(encoder, task, cell_spec(cfg).head, cell_spec(cfg).extract)
    assert len(fits) == 1
    # One-hot identity features separate the three residue groups exactly: a ridge classifier
    # on them reaches (nearly) every labelled residue.
    assert fits[0].scores["test"]["accuracy"] > 0.95
    n_test = int((task.splits["test"].flat_targets() != IGNORE).sum())
    assert fits[0].n_eval["test"] == n_test
