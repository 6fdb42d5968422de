"""Fine-tuning's training loop: determinism, early stopping, resume after a kill, learning.

Tiny models, tiny tasks: every fit takes a fraction of a second to a few seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tune_helpers import count_k, count_kr, load, toy_task, write_weights

import ptransfer.tune.finetune as finetune_module
import ptransfer.tune.train as train_module
from ptransfer.embed.batching import Batching
from ptransfer.heads import RidgeProbe
from ptransfer.metrics import spearman
from ptransfer.tune.checkpoint import load_progress, save_progress
from ptransfer.tune.data import make_batches
from ptransfer.tune.finetune import FineTuner
from ptransfer.tune.spec import TuneSpec

TASK = toy_task(count_k, sizes=(40, 16, 16), length=12)
SPEC = TuneSpec(mode="full", max_epochs=4, patience=4, learning_rates=(3e-3,),
                toks_per_batch=64)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("tune_weights"))


def fit(weights, spec=SPEC, seed=0, family="esm2", task=TASK, checkpoint=None, **load_args):
    encoder = load(family, weights, **load_args)
    return FineTuner(spec, seed=seed, checkpoint=checkpoint, progress=False).fit(encoder, task)


def test_the_same_seed_gives_identical_predictions(weights):
    torch.manual_seed(11)
    first = fit(weights, seed=3)
    torch.rand(5)  # whatever the caller's random state: the seed alone decides
    again = fit(weights, seed=3)
    for name in ("val", "test"):
        assert np.array_equal(first.predictions_[name], again.predictions_[name])
    assert first.history_ == again.history_
    other = fit(weights, seed=4)
    assert not np.array_equal(first.predictions_["test"], other.predictions_["test"])


def test_outputs_follow_the_split_order_and_the_task_kind(weights):
    tuner = fit(weights)
    assert set(tuner.predictions_) == {"val", "test"}
    assert np.array_equal(tuner.targets_["test"], TASK.splits["test"].targets)
    assert tuner.predictions_["test"].shape == (16,)
    classes = toy_task(lambda s: s.count("K") % 3, sizes=(40, 16, 16), length=12,
                       kind="classification")
    proba = fit(weights, task=classes).predictions_["test"]
    assert proba.shape == (16, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_learning_rate_and_epoch_are_chosen_on_validation(weights):
    spec = TuneSpec(mode="full", max_epochs=3, patience=3, learning_rates=(1e-5, 3e-3),
                    toks_per_batch=64)
    tuner = fit(weights, spec=spec)
    runs = {run["lr"]: run for run in tuner.history_}
    assert sorted(runs) == [1e-5, 3e-3]
    best = max(runs.values(), key=lambda r: r["best_value"])
    assert tuner.selected_params_ == {"lr": best["lr"], "epoch": best["best_epoch"]}
    for run in runs.values():
        values = [e["val"] for e in run["history"]]
        assert run["best_value"] == max(values)
        assert run["best_epoch"] == 1 + values.index(max(values))


def test_early_stopping_restores_the_best_validation_epoch(weights, monkeypatch):
    """From epoch 4 on the head is destroyed (constant output, NaN Spearman): the run stops
    ``patience`` epochs after its best and predicts with the best epoch's weights, exactly
    those of a run that ended at that epoch."""
    original = train_module.train_epoch
    epochs = []

    def collapsing(network, *args, **kwargs):
        out = original(network, *args, **kwargs)
        epochs.append(1)
        if len(epochs) > 3:
            with torch.no_grad():
                network.head.out.weight.zero_()
        return out

    monkeypatch.setattr(train_module, "train_epoch", collapsing)
    spec = TuneSpec(mode="full", max_epochs=12, patience=4, learning_rates=(3e-3,),
                    toks_per_batch=64)
    collapsed = fit(weights, spec=spec)
    history = collapsed.history_[0]["history"]
    best = collapsed.selected_params_["epoch"]
    assert best <= 3 and history[best - 1]["val"] == max(e["val"] for e in history[:3])
    assert len(history) == best + spec.patience >= 4  # stopped after `patience` bad epochs
    assert all(math.isnan(e["val"]) for e in history[3:])
    monkeypatch.setattr(train_module, "train_epoch", original)
    stopped = fit(weights, spec=TuneSpec(**{**spec.as_dict(), "max_epochs": best,
                                           "learning_rates": (3e-3,)}))
    for name in ("val", "test"):
        assert np.array_equal(collapsed.predictions_[name], stopped.predictions_[name])


class Killed(RuntimeError):
    pass


def test_a_fine_tune_killed_mid_epoch_resumes_to_the_same_result(weights, tmp_path,
                                                                 monkeypatch):
    """Killed in the middle of the second learning rate's second epoch, re-run with the same
    progress file: it trains only what was left (from the end of that run's first epoch)
    and ends with the predictions and history of the run that was never interrupted."""
    spec = TuneSpec(mode="lora", max_epochs=3, patience=3, learning_rates=(1e-3, 3e-3),
                    toks_per_batch=64)
    reference = fit(weights, spec=spec)
    per_epoch = len(make_batches(TASK.splits["train"], Batching(64, 1022)))
    path = tmp_path / "progress.pt"
    step = torch.optim.AdamW.step
    calls = []

    def counting(die_at):
        def run(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == die_at:
                raise Killed("kill -9")
            return step(self, *args, **kwargs)
        return run

    monkeypatch.setattr(torch.optim.AdamW, "step", counting(3 * per_epoch + per_epoch + 2))
    with pytest.raises(Killed):
        fit(weights, spec=spec, checkpoint=path)
    saved = load_progress(path, fit_identity(weights, spec))
    assert len(saved["runs"]) == 1 and saved["current"]["epoch"] == 1
    (tmp_path / ".progress.pt.99999.partial").write_bytes(b"half a file")  # a killed writer's
    calls.clear()
    monkeypatch.setattr(torch.optim.AdamW, "step", counting(-1))
    resumed = fit(weights, spec=spec, checkpoint=path)
    assert len(calls) == 2 * per_epoch  # the second run's epochs 2 and 3 only
    for name in ("val", "test"):
        assert np.array_equal(resumed.predictions_[name], reference.predictions_[name])
    assert resumed.history_ == reference.history_
    assert resumed.selected_params_ == reference.selected_params_
    assert not list(tmp_path.glob(".*.partial"))
    finished = load_progress(path, fit_identity(weights, spec))
    assert finished["finished"] and finished["current"] is None
    # a finished fine-tune is read back without training anything
    monkeypatch.setattr(finetune_module, "adapt", lambda *a, **k: pytest.fail("retrained"))
    again = fit(weights, spec=spec, checkpoint=path)
    assert np.array_equal(again.predictions_["test"], reference.predictions_["test"])
    assert again.n_trainable_ == reference.n_trainable_


def fit_identity(weights, spec, seed=0):
    encoder = load("esm2", weights)
    return FineTuner(spec, seed=seed)._identity(encoder, TASK)


def test_progress_of_another_fine_tune_is_not_resumed(tmp_path, caplog, monkeypatch):
    path = tmp_path / "progress.pt"
    save_progress(path, {"identity": {"seed": 1}, "runs": [], "current": None})
    assert load_progress(path, {"seed": 1})["runs"] == []
    assert load_progress(path, {"seed": 2}) is None
    assert "another fine-tune" in caplog.text
    import ptransfer.tune.checkpoint as checkpoint_module

    def failing(*args):  # a crash between writing the new file and renaming it
        raise OSError("disk gone")

    monkeypatch.setattr(checkpoint_module.os, "replace", failing)
    with pytest.raises(OSError):
        save_progress(path, {"identity": {"seed": 1}, "runs": [{"lr": 1.0}], "current": None})
    monkeypatch.undo()
    assert load_progress(path, {"seed": 1})["runs"] == []  # the previous file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["progress.pt"]
    path.write_bytes(b"not a checkpoint")
    assert load_progress(path, {"seed": 1}) is None
    assert "unreadable" in caplog.text


def test_full_fine_tuning_from_scratch_learns_what_a_frozen_random_probe_cannot(weights):
    """The target counts the dipeptide KR: a local pattern, no function of composition.
    CARP trained from random weights learns it; a ridge probe on the frozen random CARP's
    mean-pooled last layer does not."""
    task = toy_task(count_kr, sizes=(200, 60, 60), length=32, seed=1)
    spec = TuneSpec(mode="full", max_epochs=10, patience=3, learning_rates=(1e-2,),
                    toks_per_batch=512)
    tuner = fit(weights, spec=spec, family="carp", task=task, ablation="random_init")
    tuned = spearman(tuner.targets_["test"], tuner.predictions_["test"])
    frozen = load("carp", weights, ablation="random_init")
    X = {name: frozen.embed(split.sequences)[-1].mean(dim=1).numpy()
         for name, split in task.splits.items()}
    probe = RidgeProbe().fit(X["train"], task.splits["train"].targets, X["val"],
                             task.splits["val"].targets)
    probed = spearman(task.splits["test"].targets, probe.predict(X["test"]))
    assert tuned >= 0.9, tuned
    assert probed < tuned - 0.1, (probed, tuned)


CHILD = """
import json, os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from tune_helpers import count_k, load, toy_task
from ptransfer.tune.finetune import FineTuner
from ptransfer.tune.spec import TuneSpec
paths = {k: Path(v) for k, v in json.loads(sys.argv[1]).items()}
step, calls = torch.optim.AdamW.step, []
def dying(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, *args, **kwargs)
torch.optim.AdamW.step = dying
spec = TuneSpec.from_mapping(json.loads(sys.argv[4]))
task = toy_task(count_k, sizes=(40, 16, 16), length=12)  # TASK
FineTuner(spec, seed=0, checkpoint=sys.argv[2], progress=False).fit(load("esm2", paths), task)
"""
SPEC_KILL = TuneSpec(mode="full", max_epochs=3, patience=3, learning_rates=(3e-3,),
                     toks_per_batch=64)


@pytest.mark.slow  # a fresh interpreter importing torch and the models: ~15 s on a busy CPU;
# test_a_fine_tune_killed_mid_epoch_resumes_to_the_same_result covers resume in the default run
def test_kill_9_mid_epoch_then_a_rerun_completes_identically(weights, tmp_path):
    """A real SIGKILL three optimizer steps into the second epoch, in a child process; the
    re-run resumes from epoch 1's progress file and ends exactly as an uninterrupted run."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    per_epoch = len(make_batches(TASK.splits["train"], Batching(64, 1022)))
    path = tmp_path / "progress.pt"
    tests = str(Path(__file__).resolve().parent)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps({k: str(v) for k, v in weights.items()}),
         str(path), str(per_epoch + 3),  # 3 steps into the second epoch
         json.dumps(SPEC_KILL.as_dict())],
        env={**__import__("os").environ, "PYTHONPATH": tests}, capture_output=True,
        text=True, timeout=300)
    assert child.returncode == -9, child.stderr[-2000:]
    saved = load_progress(path, FineTuner(SPEC_KILL)._identity(load("esm2", weights), TASK))
    assert saved["current"]["epoch"] == 1 and not saved.get("finished")
    resumed = fit(weights, spec=SPEC_KILL, checkpoint=path)
    reference = fit(weights, spec=SPEC_KILL)
    for name in ("val", "test"):
        assert np.array_equal(resumed.predictions_[name], reference.predictions_[name])
    assert resumed.history_ == reference.history_


def test_bf16_autocast_trains_close_to_fp32(weights):
    """precision=bf16 runs the forward under autocast (on CUDA it is the default, ``auto``);
    on this CPU the same path runs: predictions close to fp32's, not equal to them."""
    spec = TuneSpec(mode="lora", max_epochs=1, learning_rates=(1e-3,), toks_per_batch=64)
    fp32 = fit(weights, spec=spec)
    bf16 = fit(weights, spec=TuneSpec(**{**spec.as_dict(), "precision": "bf16",
                                         "learning_rates": (1e-3,)}))
    assert not np.array_equal(bf16.predictions_["test"], fp32.predictions_["test"])
    scale = np.abs(fp32.predictions_["test"]).max()
    np.testing.assert_allclose(bf16.predictions_["test"], fp32.predictions_["test"],
                               atol=0.05 * scale)
