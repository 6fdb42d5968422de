"""The depth figure's band (issue 19 item 16): with one seed, the 95 % bootstrap interval
over test proteins at each layer; ±1 sd over seeds only with two or more seeds.

Intervals are checked against scipy's own percentile bootstrap and against the binomial
standard error (protein-level resampling, residues moving with their protein).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from stats_fakes import protein_task, write_cell

from ptransfer.analysis import plots
from ptransfer.analysis.layer_bands import band_layers, layer_intervals
from ptransfer.analysis.predictions import item_id, predictions_frame, write_predictions
from ptransfer.analysis.report import make_report


@pytest.fixture(autouse=True)
def _isolated_torch_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _write(path, eval_set, layer, items, positions, y_true, y_pred, classification):
    write_predictions([predictions_frame(eval_set, layer, items, positions, y_true, y_pred,
                                         classification=classification)], path)
    return path


def test_spearman_band_matches_scipys_percentile_bootstrap(tmp_path):
    rng = np.random.default_rng(0)
    n = 500
    x = rng.normal(size=n)
    y = 0.6 * x + rng.normal(size=n)
    items = np.array([item_id(f"p{i}") for i in range(n)])
    path = _write(tmp_path / "c" / "predictions.parquet", "test", 0, items, np.full(n, -1),
                  x, y, False)
    got = layer_intervals(path, "test", "spearman", [0], n_resamples=2000).iloc[0]
    ref = stats.bootstrap((x.astype(np.float32), y.astype(np.float32)),
                          lambda a, b: stats.spearmanr(a, b).statistic, paired=True,
                          vectorized=False, n_resamples=2000, method="percentile",
                          random_state=1).confidence_interval
    assert got.ci_low == pytest.approx(ref.low, abs=0.015)
    assert got.ci_high == pytest.approx(ref.high, abs=0.015)


def test_per_residue_band_resamples_proteins_not_residues(tmp_path):
    rng = np.random.default_rng(1)
    n_proteins, length, p = 200, 50, 0.6
    right = rng.random(n_proteins) < p  # a protein is all right or all wrong
    items = np.repeat([item_id(f"r{i}") for i in range(n_proteins)], length)
    positions = np.tile(np.arange(length), n_proteins)
    y_true = rng.integers(0, 3, size=n_proteins * length)
    y_pred = np.where(np.repeat(right, length), y_true, (y_true + 1) % 3)
    path = _write(tmp_path / "c" / "predictions.parquet", "cb513", 3, items, positions,
                  y_true, y_pred, True)
    got = layer_intervals(path, "cb513", "accuracy", [3], n_resamples=2000).iloc[0]
    acc = right.mean()
    expected = 2 * 1.96 * np.sqrt(acc * (1 - acc) / n_proteins)  # proteins are the units
    assert got.ci_high - got.ci_low == pytest.approx(expected, rel=0.15)
    assert got.ci_low < acc < got.ci_high


def test_big_curves_get_their_band_at_evenly_spaced_layers():
    assert band_layers(7, 8_309) == list(range(7))
    few = band_layers(58, 81_413)
    assert few[0] == 0 and few[-1] == 57 and len(few) == 9


def test_one_seed_depth_curves_show_the_bootstrap_band_and_sd_needs_two_seeds(tmp_path):
    task = protein_task(300)
    frames = [write_cell(tmp_path, "t", task, lambda layer: 0.2 + 0.3 * layer, n_layers=3)]
    frames += [write_cell(tmp_path, "t", task, 0.3, ablation="random_init", seed=s,
                          n_layers=3) for s in (0, 1, 2)]
    csv = tmp_path / "results.csv"
    pd.concat(frames).to_csv(csv, index=False)
    make_report(csv, tmp_path / "out")
    index = (tmp_path / "out" / "index.html").read_text()
    caption = index.split('src="depth_t_test.png"')[1].split("</figcaption>")[0]
    assert "pretrained 1 seed (95 % bootstrap interval over test proteins)" in caption
    assert "random_init 3 seeds (±1 sd over seeds)" in caption
    svg = (tmp_path / "out" / "depth_t_test.svg").read_text()
    assert "band: 95 % bootstrap interval" in svg and "over test proteins (1 seed)" in svg
    assert "band: ±1 sd over seeds" in svg and "mean ± 1 sd" not in svg


def test_a_one_seed_curve_without_predictions_has_no_band_and_no_sd_label():
    curves = pd.DataFrame({"model": ["m"] * 3, "ablation": ["random_init"] * 3,
                           "rel_depth": [0.0, 0.5, 1.0], "mean": [0.1, 0.7, 0.4],
                           "sd": [np.nan] * 3})
    fig = plots.depth_figure(curves, None, {"m": "#0072B2"}, "spearman", "t")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["m", "random init"]
    assert not fig.axes[0].collections  # no band drawn
