"""Conclusions a cell draws: the best layer (direction, NaN, val only), seeds, streaming alpha."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from cell_helpers import cell_config
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.linear_model import RidgeClassifier
from sklearn.preprocessing import StandardScaler
from tiny_models import model_config

from ptransfer.cell.key import CellKey, encoder_identity
from ptransfer.cell.rows import rows_from_fits
from ptransfer.cell.run import run_cell
from ptransfer.cell.spec import cell_spec
from ptransfer.embed.features import memory_features
from ptransfer.encoders.base import CheckpointRef
from ptransfer.heads.fit_layers import LayerFit, labelled
from ptransfer.heads.fit_streaming import fit_streaming
from ptransfer.tasks.base import IGNORE, Split, Task


def _protein_task(metric: str) -> Task:
    split = Split(["ACD", "ACE", "ACF"], np.array([0.1, 0.5, 0.9]))
    return Task("toy", "protein", "regression", {"train": split, "val": split, "test": split},
                dataset="toy", metric=metric)


def _rows(tmp_path, metric: str, val: list[float], test: list[float]) -> pd.DataFrame:
    """Rows of a hand-built 4-layer cell whose val and test scores disagree."""
    cfg = cell_config(tmp_path, "task=synthetic")
    fits = [LayerFit(layer, {"alpha": 1.0}, {"val": {metric: v}, "test": {metric: t}}, 3,
                     {"val": 3, "test": 3}) for layer, (v, t) in enumerate(zip(val, test))]
    encoder = SimpleNamespace(name="m", family="esm2", n_params=10, n_layers=len(fits))
    ref = SimpleNamespace(name="final", step=None)
    key = CellKey("cell", "hash", tmp_path)
    return rows_from_fits(cell_spec(cfg), key, _protein_task(metric), encoder, ref, "ridge", fits, "ab" * 32)


def _best(rows: pd.DataFrame) -> list[int]:
    return sorted(rows[rows.best_layer].layer.unique().tolist())


def test_best_layer_lower_is_better_nan_ignored_chosen_on_val(tmp_path):
    # mse: lower is better. Layer 0's val is NaN (never best); the val-best layer is 2; the
    # test-best layer is 3 and the largest val mse is layer 3 too (what `max` would pick).
    rows = _rows(tmp_path, "mse", val=[np.nan, 0.5, 0.2, 0.9], test=[0.1, 0.05, 0.8, 0.01])
    assert _best(rows) == [2]
    assert rows.data_fingerprint.unique().tolist() == ["ab" * 8]


def test_best_layer_higher_is_better_nan_ignored_chosen_on_val(tmp_path):
    rows = _rows(tmp_path, "spearman", val=[np.nan, 0.3, 0.6, 0.5], test=[0.9, 0.8, 0.1, 0.7])
    assert _best(rows) == [2]


def test_all_nan_validation_gives_no_best_layer_and_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        rows = _rows(tmp_path, "spearman", val=[np.nan] * 3, test=[0.9, 0.8, 0.1])
    assert _best(rows) == []
    assert "no best layer" in caplog.text


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """A multi-layer cell (tiny random-init ESM-2 on the synthetic task) at seeds 0 and 1."""
    results = tmp_path_factory.mktemp("seeds")
    frames = [run_cell(cell_config(results, "task=synthetic", "ablation=random_init",
                                   f"seed={seed}", tiny="esm2")) for seed in (0, 1)]
    return results, frames


def test_multi_layer_cell_marks_the_val_best_layer(two_seeds):
    _, frames = two_seeds
    for rows in frames:
        main = rows[rows.main_metric]
        val = main[main.eval_set == "val"].set_index("layer").value
        assert len(val) == rows.n_layers.iloc[0] == 3
        assert _best(rows) == [int(val.idxmax())]  # spearman: higher is better, on val


def test_seeds_give_different_stores_and_rows(two_seeds):
    results, (first, second) = two_seeds
    stores = sorted(p for p in (results / "embeddings").rglob("*.h5")  # index files, not shards
                    if not p.parent.name.endswith(".shards"))
    assert len(stores) == 2, stores
    a = first.set_index(["layer", "eval_set", "metric"]).value
    b = second.set_index(["layer", "eval_set", "metric"]).value
    assert not np.allclose(a.to_numpy(), b.loc[a.index].to_numpy())
    cfg = cell_config(results, "ablation=random_init", "seed=0")
    other = OmegaConf.merge(cfg, {"seed": 1})
    assert encoder_identity(cell_spec(cfg).encoder) != encoder_identity(cell_spec(other).encoder)
    pretrained = cell_config(results, "seed=0")
    assert encoder_identity(cell_spec(pretrained).encoder) == encoder_identity(cell_spec(OmegaConf.merge(pretrained, {"seed": 1})).encoder)


def _residue_task(seed: int = 0) -> Task:
    rng = np.random.default_rng(seed)
    aa = np.array(list("ACDEFGHIKLMNPQRSTVWY"))

    def split(n):
        seqs = ["".join(rng.choice(aa, size=rng.integers(15, 40))) for _ in range(n)]
        labels = []
        for s in seqs:
            y = np.array([0 if a in "AELMQKRH" else 1 if a in "VIYFWT" else 2 for a in s])
            noisy = rng.random(len(s)) < 0.25  # label noise: the alpha matters
            y[noisy] = rng.integers(0, 3, noisy.sum())
            y[rng.random(len(s)) < 0.1] = IGNORE
            labels.append(y)
        return Split(seqs, labels)

    return Task("toy_ss", "residue", "classification",
                {"train": split(40), "val": split(30), "test": split(30)},
                dataset="toy", metric="accuracy", classes=["H", "E", "C"])


def test_streaming_alpha_matches_a_brute_force_loop_over_alphas():
    alphas = [1e-2, 1.0, 1e2, 1e4, 1e6]
    cfg = cell_config("unused", "head=streaming", f"head.streaming.alphas={alphas}")
    encoder = instantiate(model_config("esm2"), _convert_="all").load(
        CheckpointRef(), ablation="random_init", seed=0)
    task = _residue_task()
    fits = fit_streaming(encoder, task, cell_spec(cfg).head, cell_spec(cfg).extract)
    feats = memory_features(encoder, task, cell_spec(cfg).extract)
    n_val = int((task.splits["val"].flat_targets() != IGNORE).sum())
    spread = []
    for fit in fits:
        X, y = labelled(feats.get(fit.layer, "train"), task.splits["train"].flat_targets(),
                        task.level)
        scaler = StandardScaler().fit(X.astype(np.float64))
        val_acc, test_acc = {}, {}
        for alpha in alphas:  # each alpha fitted on its own, from scratch
            model = RidgeClassifier(alpha=alpha).fit(scaler.transform(X.astype(np.float64)), y)
            for split, out in (("val", val_acc), ("test", test_acc)):
                Xs, ys = labelled(feats.get(fit.layer, split), task.splits[split].flat_targets(),
                                  task.level)
                out[alpha] = float((model.predict(scaler.transform(Xs.astype(np.float64)))
                                    == ys).mean())
        best = max(val_acc.values())
        spread.append(best - min(val_acc.values()))
        chosen = fit.hparams["alpha"]
        # Features from the two paths differ in the last float bits: allow one residue.
        assert val_acc[chosen] >= best - 1.0 / n_val, (fit.layer, chosen, val_acc)
        assert fit.scores["val"]["accuracy"] == pytest.approx(val_acc[chosen], abs=1.0 / n_val)
        assert fit.scores["test"]["accuracy"] == pytest.approx(test_acc[chosen], abs=2e-3)
    assert max(spread) > 0.05  # the grid's alphas really differ on val: a wrong pick shows


def test_a_protein_target_of_minus_one_is_fitted_and_scored():
    # -1 is the per-residue IGNORE class sentinel; per protein it is an ordinary target value
    # and must neither be dropped from fitting nor from scoring (predictions stay aligned).
    from scipy.stats import spearmanr

    from ptransfer.heads import RidgeProbe
    from ptransfer.heads.fit_layers import fit_layer

    rng = np.random.default_rng(0)
    y = np.array([-1.0, 0.3, -1.0, 1.2, 0.8, -0.4, 2.0, -1.0])
    X = np.c_[y + 0.01 * rng.normal(size=8), rng.normal(size=8)]
    seqs = [f"AC{c}" for c in "DEFGHIKL"]
    split = Split(seqs, y)
    task = Task("toy", "protein", "regression", {"train": split, "val": split, "test": split},
                dataset="toy", metric="spearman")
    fit = fit_layer(RidgeProbe(alphas=[1e-3]), 0, task, lambda _split: X)
    assert fit.n_train == 8 and fit.n_eval == {"val": 8, "test": 8}
    test = fit.predictions["test"]
    assert len(test.rows) == len(test.y_pred) == 8 and np.array_equal(test.y_true, y)
    assert fit.scores["test"]["spearman"] == pytest.approx(spearmanr(y, test.y_pred)[0])
