"""Every cell writes predictions.parquet; cell keys see the task's content and the precision."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from cell_helpers import cell_config
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.stats import spearmanr
from tiny_models import model_config

from ptransfer.analysis.predictions import PREDICTIONS_FILE, item_id, read_predictions
from ptransfer.cell import task_data
from ptransfer.cell.key import cell_key, encoder_identity, is_done
from ptransfer.cell.predictions import prediction_blocks
from ptransfer.cell.run import run_cell
from ptransfer.cell.spec import cell_spec
from ptransfer.embed.features import memory_features
from ptransfer.embed.store import store_path
from ptransfer.encoders.base import CheckpointRef
from ptransfer.heads.fit_layers import fit_layer, make_probe
from ptransfer.heads.fit_streaming import fit_streaming
from ptransfer.tasks.base import IGNORE, Split, Task

AA = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def _write_csv(path, seed: int = 0, kind: str = "regression", n: int = 90) -> None:
    rng = np.random.default_rng(seed)
    lines = ["sequence,target,set"]
    for i in range(n):
        seq = "".join(rng.choice(AA, size=12))
        value = seq.count("A") + seq.count("C") + rng.normal(0, 0.3)
        target = f"{value:.3f}" if kind == "regression" else ("hi" if value > 1 else "lo")
        lines.append(f"{seq},{target},{['train', 'train', 'val', 'test', 'extra'][i % 5]}")
    path.write_text("\n".join(lines) + "\n")


def _csv_cfg(tmp_path, csv, *extra):
    return cell_config(tmp_path / "res", "task=csv", f"task.path={csv}", "model=onehot", *extra)


def test_protein_regression_cell_writes_predictions_that_reproduce_its_rows(tmp_path):
    csv = tmp_path / "t.csv"
    _write_csv(csv)
    cfg = _csv_cfg(tmp_path, csv)
    rows = run_cell(cfg)
    key = cell_key(cell_spec(cfg))
    preds = read_predictions(key.dir / PREDICTIONS_FILE)
    task = instantiate(cfg.task, _convert_="all")  # loaded here, independently of the cell
    assert set(preds.eval_set) == {"val", "test", "extra"}
    for eval_set in ("val", "test", "extra"):
        block = preds[preds.eval_set == eval_set]
        split = task.splits[eval_set]
        assert block["item"].tolist() == [item_id(s) for s in split.sequences]
        assert (block.position == -1).all() and (block.layer == 0).all()
        np.testing.assert_allclose(block.y_true, split.targets, rtol=1e-6)
        value = rows[(rows.eval_set == eval_set) & (rows.metric == "spearman")].value.iloc[0]
        assert spearmanr(block.y_true, block.y_pred).statistic == pytest.approx(value, abs=1e-5)
    assert not [c for c in preds.columns if c.startswith("proba_")]  # regression: no probabilities
    assert str(preds.y_pred.dtype) == "float32" and str(preds.layer.dtype) == "int16"
    assert is_done(key)
    (key.dir / PREDICTIONS_FILE).unlink()
    assert not is_done(key)  # rows without predictions: the cell is not done


def test_protein_classification_keeps_probabilities_for_roc_auc(tmp_path):
    csv = tmp_path / "c.csv"
    _write_csv(csv, kind="classification")
    cfg = _csv_cfg(tmp_path, csv, "task.kind=classification")
    rows = run_cell(cfg)
    preds = read_predictions(cell_key(cell_spec(cfg)).dir / PREDICTIONS_FILE)
    proba = preds[["proba_0", "proba_1"]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(preds.y_pred, proba.argmax(axis=1))
    test = preds[preds.eval_set == "test"]
    accuracy = rows[(rows.eval_set == "test") & (rows.metric == "accuracy")].value.iloc[0]
    assert (test.y_true == test.y_pred).mean() == pytest.approx(accuracy)
    assert str(preds.y_true.dtype) == "int16"


def _residue_task(seed: int = 0) -> Task:
    rng = np.random.default_rng(seed)

    def split(n):
        seqs = ["".join(rng.choice(AA, size=rng.integers(8, 25))) for _ in range(n)]
        labels = [rng.integers(0, 3, len(s)) for s in seqs]
        for y in labels:
            y[rng.random(len(y)) < 0.2] = IGNORE
        return Split(seqs, labels)

    return Task("toy_ss", "residue", "classification",
                {"train": split(30), "val": split(12), "test": split(12)},
                dataset="toy", metric="accuracy", classes=["H", "E", "C"])


def _check_residue_blocks(task, fits, n_layers):
    frame = pd.concat(prediction_blocks(task, fits), ignore_index=True)
    assert sorted(frame.layer.unique()) == list(range(n_layers))
    for eval_set in ("val", "test"):
        split = task.splits[eval_set]
        by_id = {item_id(s): i for i, s in enumerate(split.sequences)}
        expected = {(item_id(s), p): int(y) for s, t in zip(split.sequences, split.targets)
                    for p, y in enumerate(t) if y != IGNORE}
        for fit in fits:
            block = frame[(frame.eval_set == eval_set) & (frame.layer == fit.layer)]
            got = {(i, int(p)): int(y) for i, p, y in zip(block["item"], block.position,
                                                         block.y_true)}
            assert got == expected  # every scored residue once, with its own label
            assert all(i in by_id for i in block["item"])
            accuracy = float((block.y_true == block.y_pred).mean())
            assert accuracy == pytest.approx(fit.scores[eval_set]["accuracy"])


def test_per_residue_predictions_streaming_and_linear():
    cfg = cell_config("unused", "head.streaming.alphas=[0.1,10.0]",
                      "head.linear.weight_decays=[0.0]", "head.linear.max_epochs=2")
    encoder = instantiate(model_config("esm2"), _convert_="all").load(
        CheckpointRef(), ablation="random_init", seed=0)
    task = _residue_task()
    _check_residue_blocks(task, fit_streaming(encoder, task, cell_spec(cfg).head, cell_spec(cfg).extract),
                          encoder.n_layers)
    feats = memory_features(encoder, task, cell_spec(cfg).extract)
    fits = [fit_layer(make_probe("linear", cell_spec(cfg).head, task, 0, "cpu"), layer, task,
                      lambda split, _l=layer: feats.get(_l, split))
            for layer in range(feats.n_layers)]
    _check_residue_blocks(task, fits, encoder.n_layers)


def test_edited_csv_makes_a_new_cell_and_an_unchanged_one_is_not_reloaded(tmp_path, monkeypatch):
    csv = tmp_path / "t.csv"
    _write_csv(csv, seed=0)
    cfg = _csv_cfg(tmp_path, csv)
    first = run_cell(cfg)
    key = cell_key(cell_spec(cfg))
    assert is_done(key)
    assert first.data_fingerprint.iloc[0] == instantiate(cfg.task).fingerprint()[:16]
    # A new process: the key comes from the JSON cache, without loading the task.
    task_data._MEMO.clear()
    task_data._LAST.clear()
    with monkeypatch.context() as patch:
        patch.setattr(task_data, "_load", lambda cfg: pytest.fail("task reloaded"))
        assert cell_key(cell_spec(cfg)) == key
    _write_csv(csv, seed=1)  # same rows count, other sequences and targets
    stat = csv.stat()
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    edited = cell_key(cell_spec(cfg))
    assert edited.cell_id != key.cell_id and not is_done(edited)
    second = run_cell(cfg)
    assert second.cell_id.iloc[0] == edited.cell_id
    assert second.data_fingerprint.iloc[0] != first.data_fingerprint.iloc[0]
    test = [f[(f.eval_set == "test") & (f.metric == "spearman")].value.iloc[0]
            for f in (first, second)]
    assert test[0] != test[1]
    assert len(list((tmp_path / "res" / "cells").iterdir())) == 2


def test_an_edit_keeping_size_and_mtime_is_seen(tmp_path):
    # Issue 19 item 10: `touch -d` puts the mtime back; the inode change time (ctime_ns)
    # cannot be set back, so the memo notices and the task is fingerprinted again.
    csv = tmp_path / "t.csv"
    _write_csv(csv, seed=0)
    cfg = _csv_cfg(tmp_path, csv)
    key = cell_key(cell_spec(cfg))
    text = csv.read_text()
    swapped = text.replace(",train\n", ",TRAIN\n", 1)  # same size, one row's split changed
    assert swapped != text and len(swapped) == len(text)
    stat = csv.stat()
    csv.write_text(swapped)
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (csv.stat().st_size, csv.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    task_data._MEMO.clear()  # a new process: only the JSON memo is left
    task_data._LAST.clear()
    assert cell_key(cell_spec(cfg)) == key  # TRAIN is train: same content, same key ...
    csv.write_text(text.replace(",1.", ",9.", 1))  # ... but new targets are another task
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert csv.stat().st_size == stat.st_size
    assert cell_key(cell_spec(cfg)) != key


def test_precision_changes_cell_and_store_identity(tmp_path):
    fp32 = cell_config(tmp_path, "task=synthetic", "ablation=random_init", tiny="esm2")
    bf16 = OmegaConf.merge(fp32, {"extract": {"precision": "bf16"}})
    assert cell_key(cell_spec(fp32)).cell_id != cell_key(cell_spec(bf16)).cell_id
    assert encoder_identity(cell_spec(fp32).encoder)["precision"] == "fp32"
    assert encoder_identity(cell_spec(fp32).encoder) != encoder_identity(cell_spec(bf16).encoder)
    assert (store_path(tmp_path, encoder_identity(cell_spec(fp32).encoder), "protein")
            != store_path(tmp_path, encoder_identity(cell_spec(bf16).encoder), "protein"))


def test_fingerprint_sees_sequences_targets_and_split_membership():
    def task(train_seqs, train_y, val_seqs, val_y):
        return Task("t", "protein", "regression",
                    {"train": Split(train_seqs, np.array(train_y)),
                     "val": Split(val_seqs, np.array(val_y)),
                     "test": Split(["MM"], np.array([0.0]))}, dataset="d", metric="spearman")

    base = task(["AC", "AD"], [1.0, 2.0], ["AE"], [3.0])
    assert base.fingerprint() == task(["AC", "AD"], [1.0, 2.0], ["AE"], [3.0]).fingerprint()
    variants = [
        task(["AC", "AD"], [1.0, 2.5], ["AE"], [3.0]),       # one target
        task(["AC", "AF"], [1.0, 2.0], ["AE"], [3.0]),       # one sequence
        task(["AC"], [1.0], ["AD", "AE"], [2.0, 3.0]),       # an item moved from train to val
        task(["AD", "AC"], [2.0, 1.0], ["AE"], [3.0]),       # order
        task(["ACA", "D"], [1.0, 2.0], ["AE"], [3.0]),       # a boundary between sequences
    ]
    prints = {v.fingerprint() for v in variants}
    assert len(prints) == len(variants) and base.fingerprint() not in prints
    assert len(base.fingerprint()) == 64


def test_unloadable_task_gets_a_placeholder_key_until_its_file_appears(tmp_path, monkeypatch):
    csv = tmp_path / "later.csv"
    cfg = _csv_cfg(tmp_path, csv)
    calls = []
    real_load = task_data._load
    monkeypatch.setattr(task_data, "_load", lambda c: calls.append(1) or real_load(c))
    missing = cell_key(cell_spec(cfg))
    assert cell_key(cell_spec(cfg)) == missing and len(calls) == 1  # one failed load, not one per key
    assert not is_done(missing)
    with pytest.raises(Exception, match="later.csv"):
        run_cell(cfg)  # the loader's own error, naming the file
    _write_csv(csv)
    present = cell_key(cell_spec(cfg))
    assert present.cell_id != missing.cell_id
    assert run_cell(cfg).cell_id.iloc[0] == present.cell_id
