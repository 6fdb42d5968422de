"""Per-protein one-hot on long proteins: padding cap, memory estimate, log line, refusal, plan."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from cli_helpers import REPO, check, ptransfer
from hydra import compose, initialize_config_dir

from ptransfer.cell import memory
from ptransfer.cell.key import cell_key
from ptransfer.cell.run import run_cell
from ptransfer.cell.spec import cell_spec
from ptransfer.embed.features import memory_features
from ptransfer.embed.settings import ExtractSettings
from ptransfer.encoders.onehot import CANONICAL, OneHotEncoder, padded_length
from ptransfer.tasks.user_csv import load_csv_task

EXTRACT = ExtractSettings(toks_per_batch=64, progress=False)
LONGEST = 30


def _sequences(rng, n, low=5, high=LONGEST):
    return ["".join(rng.choice(list(CANONICAL), int(rng.integers(low, high)))) for _ in range(n)]


@pytest.fixture()
def csv_task(tmp_path):
    """24 proteins, two classes, the longest exactly LONGEST residues (train row 1)."""
    rng = np.random.default_rng(0)
    sequences = _sequences(rng, 24)
    sequences[0] = "".join(rng.choice(list(CANONICAL), LONGEST))
    splits = ["train"] * 16 + ["val"] * 4 + ["test"] * 4
    lines = ["sequence,target,set"] + [f"{s},{'ab'[i % 2]},{split}"
                                       for i, (s, split) in enumerate(zip(sequences, splits))]
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, sequences, splits


def _onehot_rows(sequences, pad):
    """Reference: each protein's 20 x pad one-hot, first pad residues, flattened (N x 20 pad)."""
    out = np.zeros((len(sequences), pad, 20), dtype=np.float32)
    for i, sequence in enumerate(sequences):
        for j, residue in enumerate(sequence[:pad]):
            out[i, j, CANONICAL.index(residue)] = 1.0
    return out.reshape(len(sequences), pad * 20)


def test_padded_length_caps_at_max_len():
    assert padded_length([3, 9, 5], None) == 9
    assert padded_length([3, 9, 5], 5) == 5
    assert padded_length([3, 4], 10) == 4  # a cap above the longest changes nothing


@pytest.mark.parametrize("max_len, pad", [(None, LONGEST), (12, 12)])
def test_memory_features_pad_and_truncate(csv_task, max_len, pad):
    path, sequences, splits = csv_task
    task = load_csv_task(path, kind="classification")
    encoder = OneHotEncoder(max_len=max_len).load(None, ablation="pretrained", seed=0)
    feats = memory_features(encoder, task, EXTRACT)
    train = feats.get(0, "train")
    assert train.shape == (16, 20 * pad) and train.dtype == np.float32
    np.testing.assert_array_equal(train, _onehot_rows(task.splits["train"].sequences, pad))
    np.testing.assert_array_equal(feats.get(0, "test"), _onehot_rows(task.splits["test"].sequences, pad))


def test_estimate_counts_every_split_and_the_probe_copy(csv_task):
    path, _, _ = csv_task
    task = load_csv_task(path, kind="classification")
    encoder = OneHotEncoder()
    logistic = memory.onehot_memory(task, encoder, "logistic")
    width = 20 * LONGEST
    assert (logistic.width, logistic.rows, logistic.train_rows) == (width, 24, 16)
    assert logistic.held_bytes == 24 * width * 4  # float32, all splits
    assert logistic.probe_bytes == 16 * width * 4  # one float32 standardised train copy
    ridge = memory.onehot_memory(task, encoder, "ridge")
    assert ridge.probe_bytes == 16 * width * 16 + 4 * width * 8  # + float64 validation copy
    capped = memory.onehot_memory(task, OneHotEncoder(max_len=10), "logistic")
    assert capped.width == 200 and capped.padded_len == 10 and capped.longest == LONGEST


def _cfg(conf_overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=conf_overrides)


def _overrides(path, tmp_path, *extra):
    return ["task=csv", f"task.path={path}", "task.kind=classification", "task.name=long",
            "model=onehot", f"results_dir={tmp_path / 'res'}", "extract.progress=false",
            "head.logistic.Cs=[0.1,1.0]", *extra]


def test_cell_logs_width_and_estimate(csv_task, tmp_path, caplog):
    path, _, _ = csv_task
    cfg = _cfg(_overrides(path, tmp_path))
    with caplog.at_level(logging.INFO, logger="ptransfer"):
        frame = run_cell(cfg)
    assert len(frame) > 0
    line = next(r.getMessage() for r in caplog.records if "one-hot features" in r.getMessage())
    width = 20 * LONGEST
    assert f"20 x {LONGEST} = {width} columns per protein" in line
    expected = (24 * width * 4 + 16 * width * 4) / 1e9
    assert f"~{expected:.2f} GB" in line and "available" in line


def test_cell_refuses_when_the_estimate_exceeds_memory(csv_task, tmp_path, monkeypatch):
    path, _, _ = csv_task
    budget = 30_000.0  # bytes "available"
    monkeypatch.setattr(memory, "available_bytes", lambda: budget)
    cfg = _cfg(_overrides(path, tmp_path))
    with pytest.raises(MemoryError, match="model.max_len") as caught:
        run_cell(cfg)
    message = str(caught.value)
    assert f"20 x {LONGEST} = {20 * LONGEST} columns" in message
    suggested = int(message.rsplit("model.max_len=", 1)[1].split()[0])
    # Hand-computed: 24 rows held + 16 train rows copied, 20 values x 4 B per residue.
    assert suggested == int(budget // ((24 + 16) * 20 * 4))
    assert not (cell_key(cell_spec(cfg)).dir / "rows.csv").exists()
    # The hint works: with that cap the cell fits and runs.
    capped = _cfg(_overrides(path, tmp_path, f"model.max_len={suggested}"))
    assert len(run_cell(capped)) > 0


def test_plan_prints_width_and_estimate(csv_task, tmp_path):
    path, _, _ = csv_task
    out = check(ptransfer("plan", *_overrides(path, tmp_path), cwd=tmp_path))
    assert f"one-hot features: 20 x {LONGEST} = {20 * LONGEST} columns per protein" in out
    assert "GB probe working copy" in out


def test_ridge_predictions_in_chunks_equal_sklearn(monkeypatch):
    # Ridge predicts test sets in row chunks; tiny chunks against sklearn on the whole split.
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    import ptransfer.heads.standardize as standardize
    from ptransfer.heads import RidgeProbe

    rng = np.random.default_rng(3)
    X, X_val, X_test = (rng.normal(size=(n, 8)) * 3 + 1 for n in (60, 20, 33))
    w = rng.normal(size=8)
    y, y_val = X @ w + rng.normal(size=60), X_val @ w + rng.normal(size=20)
    monkeypatch.setattr(standardize, "CHUNK_ELEMENTS", 16)  # 2 rows per chunk
    probe = RidgeProbe(alphas=(0.1, 1.0, 10.0)).fit(X, y, X_val, y_val)
    scaler = StandardScaler().fit(X)
    reference = Ridge(alpha=probe.alpha_).fit(scaler.transform(X), y)
    np.testing.assert_allclose(probe.predict(X_test), reference.predict(scaler.transform(X_test)),
                               rtol=1e-10, atol=1e-10)
