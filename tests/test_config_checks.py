"""Config mistakes are one line naming the key, before anything runs (issue 19 items 4, 5, 13).

Everything runs ``ptransfer.cli.main`` in-process; nothing here trains or embeds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import main_output


def _one_error_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out, out
    return lines[0]


# -- item 4: pretrain rejects unknown keys as run does ----------------------------------------

@pytest.mark.parametrize("override,key", [("+max_step=3", "max_step"),
                                          ("+schedule.max_step=3", "schedule.max_step"),
                                          ("+data.fastaa=x.fa", "data.fastaa")])
def test_pretrain_rejects_an_unknown_key_listing_the_known_ones(work, capsys, override, key):
    code, out = main_output(capsys, "pretrain", override, "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and line.startswith("ptransfer pretrain: error: unknown config key(s)")
    assert f"'{key}'" in line
    known = "max_steps" if key.startswith("schedule") else ("fasta" if "data" in key
                                                            else "schedule")
    assert known in line.split("; known")[1]
    assert not (work / "res").exists()  # nothing trained, nothing written


def test_pretrain_checks_value_types(work, capsys):
    code, out = main_output(capsys, "pretrain", "seed=abc", "results_dir=res")
    assert code == 1 and "config key 'seed': expected an integer" in _one_error_line(out)


# Issue 28 items 1 and 4: every pretrain value is checked before anything runs or is written.
@pytest.mark.parametrize("override,key,expected", [
    ("schedule.max_steps=-1", "schedule.max_steps", "an integer >= 1"),
    ("schedule.max_steps=0", "schedule.max_steps", "an integer >= 1"),
    ("schedule.max_steps=abc", "schedule.max_steps", "an integer >= 1"),
    ("schedule.lr=-1", "schedule.lr", "a number > 0"),
    ("schedule.lr=abc", "schedule.lr", "a number > 0"),
    ("schedule.warmup_steps=-3", "schedule.warmup_steps", "an integer >= 0"),
    ("schedule.betas=[0.9]", "schedule.betas", "two numbers in [0, 1)"),
    ("schedule.checkpoints=[0,-5]", "schedule.checkpoints", "a list of integer steps >= 0"),
    ("schedule.toks_per_batch=0", "schedule.toks_per_batch", "an integer >= 1"),
    ("schedule.decay=step", "schedule.decay", "cosine or linear"),
    ("data.max_len=0", "data.max_len", "an integer >= 1"),
    ("mlm.to_mask=1.5", "mlm.to_mask", "a number in [0, 1]"),
    ("cpu_threads=0", "cpu_threads", "null or an integer >= 1"),
])
def test_pretrain_checks_every_value_before_writing(work, capsys, override, key, expected):
    code, out = main_output(capsys, "pretrain", override, "data.root=nowhere", "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and line.startswith(f"ptransfer pretrain: error: config key {key!r}: ")
    value = override.split("=")[1]
    assert f"expected {expected}" in line and f"got{value}" in line.replace(" ", "").replace("'", "")
    assert not (work / "res").exists()  # no hydra/ folder, no out_dir: nothing written


def test_pretrain_masking_rates_are_checked_together(work, capsys):
    code, out = main_output(capsys, "pretrain", "mlm.to_mask=0.95", "mlm.to_random=0.1",
                            "results_dir=res")
    assert code == 1 and "sum to at most 1" in _one_error_line(out)
    assert not (work / "res").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CPU-only torch")
def test_pretrain_on_cuda_without_cuda_names_the_key(work, capsys):
    code, out = main_output(capsys, "pretrain", "device=cuda:0", "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and "config key 'device'" in line and "no CUDA" in line


# Issue 28 items 3 and 4: sweep-level values and the environment, before anything is written.
@pytest.mark.parametrize("override,key,expected", [
    ("extract.shard_tokens=-5", "extract.shard_tokens", "an integer >= 1, got -5"),
    ("extract.shard_tokens=0", "extract.shard_tokens", "an integer >= 1, got 0"),
    ("extract.jobs_per_gpu=0", "extract.jobs_per_gpu", "an integer >= 1, got 0"),
    ("extract.jobs_per_gpu=-1", "extract.jobs_per_gpu", "an integer >= 1, got -1"),
    ("extract.toks_per_batch=0", "extract.toks_per_batch", "an integer >= 1, got 0"),
    ("extract.device=gpu", "extract.device", "auto, cpu, cuda or cuda:N, got 'gpu'"),
])
def test_sweep_values_are_checked_before_anything_is_written(work, capsys, monkeypatch,
                                                             override, key, expected):
    monkeypatch.setenv("PTRANSFER_FAKE_GPUS", "2")  # jobs_per_gpu=0 was ignored with fake GPUs
    for argv in (["run", "-m", "model=onehot,esm2_t6_8M_UR50D"], ["plan"]):
        code, out = main_output(capsys, *argv, "task=synthetic", "ablation=random_init",
                                "results_dir=res", override)
        line = _one_error_line(out)
        assert code == 1 and f"config key {key!r}: expected {expected}" in line, argv
        assert not (work / "res").exists()


@pytest.mark.parametrize("value", ["-1", "abc", "2.5"])
def test_a_bad_fake_gpu_count_names_the_variable(work, capsys, monkeypatch, value):
    monkeypatch.setenv("PTRANSFER_FAKE_GPUS", value)
    code, out = main_output(capsys, "run", "-m", "task=synthetic", "model=onehot",
                            "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and f"environment variable PTRANSFER_FAKE_GPUS={value!r}" in line
    assert "non-negative integer" in line and not (work / "res").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CPU-only torch")
def test_a_cuda_device_on_a_cpu_build_names_the_key(work, capsys):
    code, out = main_output(capsys, "run", "task=synthetic", "model=onehot",
                            "extract.device=cuda:0", "results_dir=res")
    assert code == 1 and "Torch not compiled" not in out
    assert "config key 'extract.device': 'cuda:0', but this machine has no CUDA device" in out
    from ptransfer.cell.config_values import resolve_device  # the sweep's jobs resolve it too

    with pytest.raises(ValueError, match="config key 'extract.device': 'cuda'"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu" == resolve_device("cpu")


# -- item 5: names that become paths are safe identifiers ---------------------------------

def _small_csv(path):
    rows = ["sequence,target,set"] + [f"{s},{i * 0.1},{split}" for i, (s, split) in enumerate(
        [("MKV", "train"), ("MKL", "train"), ("MKI", "val"), ("MKA", "val"), ("MKC", "test"),
         ("MKD", "test")])]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("override,key", [
    ("task.name=../../x", "task.name"),
    ("task.name=proj/x", "task.name"),
    ("task.name=.hidden", "task.name"),
    ("model.name=a/b", "model.name"),
    ("checkpoint=../up", "checkpoint"),
])
def test_names_that_become_paths_must_be_safe(work, capsys, override, key):
    data = _small_csv(work / "t.csv")
    code, out = main_output(capsys, "run", "task=csv", f"task.path={data}", "model=onehot",
                      "results_dir=res/inner", override)
    line = _one_error_line(out)
    assert code == 1 and f"config key {key!r}" in line and "letters, digits" in line
    assert not (work / "res").exists() and not list(work.parent.glob("x"))


def test_a_csv_stem_that_is_not_a_safe_name_says_to_set_task_name(work, capsys):
    data = _small_csv(work / "my data.csv")
    code, out = main_output(capsys, "run", "task=csv", f"task.path={data}", "model=onehot",
                      "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and "'task.name'" in line and "'my data'" in line
    assert "set task.name=" in line


def test_pretrain_arch_name_must_be_safe(work, capsys):
    code, out = main_output(capsys, "pretrain", "arch.name=../x", "results_dir=res")
    assert code == 1 and "config key 'arch.name'" in _one_error_line(out)


# -- item 11: one task name, one task, checked at sweep start -----------------------------

def test_a_sweep_with_two_tasks_under_one_name_is_refused_before_it_runs(work, capsys):
    one, two = work / "one", work / "two"
    one.mkdir(), two.mkdir()
    first, second = _small_csv(one / "x.csv"), _small_csv(two / "x.csv")
    code, out = main_output(capsys, "run", "-m", "task=csv", f"task.path={first},{second}",
                      "model=onehot", "results_dir=res", "extract.progress=false")
    line = _one_error_line(out)
    assert code == 1 and "task.name 'x' names 2 different tasks" in line
    assert str(first) in line and str(second) in line and "own name" in line
    assert not (work / "res" / "cells").exists()  # nothing ran
    code, out = main_output(capsys, "run", "-m", "task=csv", f"task.path={first}",
                      "task.overlap=keep,drop", "model=onehot", "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and "task.name 'x' names 2 different tasks" in line
    assert "task.overlap=" in line and " vs " in line


def test_distinct_task_names_in_a_preset_sweep_pass(work):
    from ptransfer.cli import CONF_DIR
    from ptransfer.sweep.task_names import check_task_names

    assert check_task_names(CONF_DIR, ["+experiment=own_checkpoints"]) == 4


# -- item 13: each of these is one line naming the key or the path --------------------------

def _unwritable(work: Path) -> Path:
    """A folder path nothing can be written under (as root: under /sys)."""
    if os.geteuid() == 0:  # root writes through file modes; /sys refuses even root
        if os.access("/sys", os.W_OK) and not Path("/sys").is_mount():
            pytest.skip("no directory here that root cannot write")
        return Path("/sys/ptransfer_not_writable/x")
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked / "x"


def _blocked(work: Path) -> Path:
    """A folder path with a file in the way."""
    (work / "a_file").write_text("")
    return work / "a_file" / "x"


@pytest.mark.parametrize("where", [_unwritable, _blocked])
def test_an_unwritable_store_dir_is_found_before_any_model_is_built(work, capsys, where):
    target = where(work)
    code, out = main_output(capsys, "run", "task=synthetic", "model=esm2_t6_8M_UR50D",
                      "ablation=random_init", "results_dir=res", f"store_dir={target}")
    line = _one_error_line(out)
    assert code == 1 and f"store_dir={target}: cannot write there" in line
    assert not (work / "res" / "cells").exists()


@pytest.mark.parametrize("where", [_unwritable, _blocked])
def test_collect_and_report_into_an_unwritable_place_are_one_line(work, capsys, where):
    data = _small_csv(work / "t.csv")
    assert main_output(capsys, "run", "task=csv", f"task.path={data}", "model=onehot",
                 "results_dir=res", "extract.progress=false")[0] == 0
    assert main_output(capsys, "collect", "res", "--resamples", "100")[0] == 0
    target = where(work)
    code, out = main_output(capsys, "report", "res/results.csv", "--out", str(target))
    assert code == 1 and str(target) in _one_error_line(out)
    (work / "res" / ".collect").rename(work / "moved")  # collect needs DIR/.collect
    (work / "res" / ".collect").write_text("in the way")
    code, out = main_output(capsys, "collect", "res", "--resamples", "100")
    assert code == 1 and "cannot write the collected tables" in _one_error_line(out)


def test_csv_task_without_a_path_names_task_path(work, capsys):
    code, out = main_output(capsys, "run", "task=csv", "model=onehot", "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and "config key 'task.path' is required" in line
    assert "InterpolationResolutionError" not in line


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_non_positive_max_len_names_the_key(work, capsys, value):
    code, out = main_output(capsys, "run", "task=synthetic", "model=onehot", f"model.max_len={value}",
                      "results_dir=res")
    assert code == 1 and "config key 'model.max_len'" in _one_error_line(out)


def test_weights_pointing_at_a_folder_say_so(work):
    from ptransfer.encoders.base import CheckpointRef
    from ptransfer.encoders.weights import WeightsUnavailable, weights_file

    with pytest.raises(WeightsUnavailable) as err:
        weights_file("esm2", "esm2_t6_8M_UR50D", CheckpointRef("final"), str(work))
    assert str(err.value) == (f"model.weights={work}: is a folder; expected a weights file "
                              f"(a .pt checkpoint in the package's format)")


@pytest.mark.parametrize("family", ["esm2", "carp"])
def test_a_checkpoint_whose_config_disagrees_with_its_tensors_is_one_line(tmp_path, family):
    import torch
    from tiny_models import TINY_ARCH, build_pretrained, write_checkpoint

    from ptransfer.encoders.carp import load_carp_module
    from ptransfer.encoders.esm import load_esm_module
    from ptransfer.encoders.weights import WeightsFileError

    path = write_checkpoint(family, build_pretrained(family), tmp_path / f"{family}_x.pt")
    data = torch.load(path, weights_only=False)
    if family == "esm2":  # the file's own config says 64 wide; its tensors are 32 wide
        data["cfg"]["model"].encoder_embed_dim = 2 * TINY_ARCH["esm2"]["embed_dim"]
    else:
        data["d_model"] = 2 * TINY_ARCH["carp"]["d_model"]
    torch.save(data, path)
    with pytest.raises(WeightsFileError) as err:
        load_esm_module(family, path) if family == "esm2" else load_carp_module(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert "size mismatch" in message and "first:" in message and len(message) < 400


def test_pretrain_with_missing_data_is_one_line(work, capsys):
    code, out = main_output(capsys, "pretrain", "data.root=nowhere", "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and line.startswith("ptransfer pretrain: error: data.tasks: task 'ss3'")
    assert "missing data file nowhere/flip_secondary_structure/splits.zip" in line
    assert "InstantiationException" not in line
