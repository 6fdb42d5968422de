"""`ptransfer report`: every expected file, no figure for absent panels, non-blank PNGs,
a self-contained index.html, and clear errors on bad input files."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from stats_fakes import protein_task, write_cell
from test_summary import synthetic_results

from ptransfer.analysis import plots
from ptransfer.analysis.report import make_report

PANELS = ["gb1_two_vs_rest_test", "ss3_cb513", "ss3_ts115", "ss3_casp12"]


@pytest.fixture(autouse=True)
def _isolated_torch_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing may write ~/.cache


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """make_report on the whole synthetic grid (drawn once for the module: figures are slow)."""
    root = tmp_path_factory.mktemp("report")
    csv = root / "results.csv"
    synthetic_results().to_csv(csv, index=False)
    out = root / "out"
    return out, make_report(csv, out)


def _names(paths) -> set[str]:
    return {p.name for p in paths}


def test_every_expected_file_is_written(full_report):
    out, paths = full_report
    expected = {"summary.csv", "summary.md", "repstat.csv", "intervals.csv", "comparisons.csv",
                "taxonomy.csv", "depth.csv", "index.html"}
    for panel in PANELS:
        for kind in ("depth", "scaling", "checkpoints"):
            expected |= {f"{kind}_{panel}.png", f"{kind}_{panel}.svg"}
    assert _names(paths) == expected
    assert {p.name for p in out.iterdir()} == expected
    assert all(p.stat().st_size > 0 for p in paths)


def test_pngs_are_not_blank(full_report):
    _, paths = full_report
    for png in (p for p in paths if p.suffix == ".png"):
        pixels = mpimg.imread(png)[..., :3]
        assert pixels.std() > 0.05, png.name
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10, png.name


def test_svg_draws_okabe_ito_and_onehot_grey(full_report):
    out, _ = full_report
    svg = (out / "depth_ss3_cb513.svg").read_text()
    # three models -> the first three Okabe-Ito colours; one-hot reference in grey
    for colour in ("#0072b2", "#d55e00", "#009e73", "#7f7f7f"):
        assert colour in svg.lower()
    assert "relative depth" in svg  # matplotlib keeps drawn text as SVG comments


def test_index_html_references_every_png_and_is_offline(full_report):
    out, paths = full_report
    index = (out / "index.html").read_text()
    for png in (p for p in paths if p.suffix == ".png"):
        assert f'src="{png.name}"' in index
    assert "http" not in index.lower()
    assert "<script" not in index and "<link" not in index
    assert "inconclusive" in index  # the classification table: no predictions here,
    assert "no predictions.parquet" in index  # and its evidence says so
    assert index.count("<figcaption>") == len([p for p in paths if p.suffix == ".png"])
    assert "0.700" in index and "0.260 ± 0.010" in index  # the summary table


def test_captions_mark_the_best_layer_and_count_seeds(full_report):
    out, _ = full_report
    index = (out / "index.html").read_text()
    depth = index.split('src="depth_ss3_cb513.png"')[1].split("</figcaption>")[0]
    assert "star: the layer chosen on validation" in depth
    assert "random_init 3 seeds" in depth and "pretrained 1 seed (no band)" in depth
    scaling = index.split('src="scaling_ss3_cb513.png"')[1].split("</figcaption>")[0]
    assert "stat_transfer 3 seeds" in scaling


def test_depth_figure_stars_the_best_layer():
    curves = pd.DataFrame({"model": ["m"] * 3, "ablation": ["pretrained"] * 3,
                           "rel_depth": [0.0, 0.5, 1.0], "mean": [0.1, 0.7, 0.4],
                           "sd": [np.nan] * 3})
    best = pd.DataFrame({"model": ["m"], "ablation": ["pretrained"], "rel_depth": [0.5],
                         "mean": [0.7]})
    fig = plots.depth_figure(curves, None, {"m": "#0072B2"}, "spearman", "t", best=best)
    stars = [line for line in fig.axes[0].lines if line.get_marker() == "*"]
    assert len(stars) == 1
    assert list(stars[0].get_xdata()) == [0.5] and list(stars[0].get_ydata()) == [0.7]


def test_report_shows_classes_with_evidence_from_predictions(tmp_path):
    """Cells with predictions: index.html shows the class decided from intervals, with the
    numbers behind it, and the summary shows intervals."""
    task = protein_task(300)
    frames = [write_cell(tmp_path, "t", task, lambda layer, q=q: q * (0.6 + 0.2 * layer),
                         checkpoint="final" if q == 2.0 else f"s{q}", step=1000.0 * q)
              for q in (0.5, 1.0, 2.0)]
    frames += [write_cell(tmp_path, "t", task, 0.2, ablation="random_init", seed=s)
               for s in range(2)]
    frames.append(write_cell(tmp_path, "t", task, 0.2, model="onehot", family="onehot",
                             n_params=0, n_layers=1))
    csv = tmp_path / "results.csv"
    pd.concat(frames, ignore_index=True).to_csv(csv, index=False)
    make_report(csv, tmp_path / "out")
    index = (tmp_path / "out" / "index.html").read_text()
    assert "<td>aligned</td>" in index
    assert "pretrained vs random_init: better" in index
    assert "pretrained @ final vs pretrained @ s1.0: better" in index
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    final = summary[summary["checkpoint"] == "final"].iloc[0]
    assert final["pretrained_best_ci_low"] < final["pretrained_best"] < final[
        "pretrained_best_ci_high"]


def test_summary_csv_holds_hand_values(full_report):
    out, _ = full_report
    summary = pd.read_csv(out / "summary.csv").set_index(["task", "eval_set", "model",
                                                          "checkpoint"])
    cell = summary.loc[("gb1_two_vs_rest", "test", "esm2_t6_8M_UR50D", "final")]
    assert cell["pretrained_best"] == pytest.approx(0.70)
    assert cell["random_init_best"] == pytest.approx(0.26)


def test_single_task_without_onehot_or_sizes(tmp_path):
    """GB1 only, CARP only, one checkpoint, no one-hot: one depth figure, nothing else."""
    df = synthetic_results(with_onehot=False, tasks=("gb1_two_vs_rest",))
    df = df[df["model"] == "carp_600k"]
    csv = tmp_path / "results.csv"
    df.to_csv(csv, index=False)
    paths = make_report(csv, tmp_path / "out")
    figures = {p.name for p in paths if p.suffix in (".png", ".svg")}
    assert figures == {"depth_gb1_two_vs_rest_test.png", "depth_gb1_two_vs_rest_test.svg"}
    svg = (tmp_path / "out" / "depth_gb1_two_vs_rest_test.svg").read_text().lower()
    assert "#7f7f7f" not in svg  # no one-hot reference line
    assert "one-hot" not in svg


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        make_report(tmp_path / "nothere.csv", tmp_path / "out")


def test_empty_file_is_named(tmp_path):
    csv = tmp_path / "empty.csv"
    csv.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: empty file"):
        make_report(csv, tmp_path / "out")


def test_header_only_file_is_an_error(tmp_path):
    csv = tmp_path / "header.csv"
    synthetic_results().head(0).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"header\.csv: .*no rows"):
        make_report(csv, tmp_path / "out")


def test_foreign_csv_is_named(tmp_path):
    csv = tmp_path / "other.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"other\.csv: not a ptransfer results table"):
        make_report(csv, tmp_path / "out")


def test_bad_rows_error_names_the_file(tmp_path):
    df = synthetic_results(tasks=("gb1_two_vs_rest",))
    csv = tmp_path / "dup.csv"
    pd.concat([df, df.head(4)]).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"dup\.csv: .*collected twice"):
        make_report(csv, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_table_moved_away_from_its_cells_says_where_it_looked(tmp_path, caplog):
    # Issue 28 item 15: NaN intervals noted "(older cell)"; the cells were simply not beside
    # the table. The note and a warning say the cells folder was not found, and where.
    task = protein_task(60)
    frames = [write_cell(tmp_path / "res", "t", task, 1.0),
              write_cell(tmp_path / "res", "t", task, 0.2, ablation="random_init"),
              write_cell(tmp_path / "res", "t", task, 0.2, model="onehot", family="onehot",
                         n_params=0, n_layers=1)]
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    csv = moved / "results.csv"
    pd.concat(frames, ignore_index=True).to_csv(csv, index=False)
    with caplog.at_level("WARNING"):
        make_report(csv, tmp_path / "out")
    said = f"cells folder not found, no cell folder under {moved.resolve()}"
    assert said in caplog.text
    index = (tmp_path / "out" / "index.html").read_text()
    assert said in index and "older cell" not in index
    # Beside its cells, a cell that lacks its file is the older cell it always was.
    csv = tmp_path / "res" / "results.csv"
    pd.concat(frames, ignore_index=True).to_csv(csv, index=False)
    (next((tmp_path / "res" / "cells").glob("*random_init*")) / "predictions.parquet").unlink()
    make_report(csv, tmp_path / "out2")
    index = (tmp_path / "out2" / "index.html").read_text()
    assert "no predictions.parquet for this cell under" in index and "not found" not in index


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_the_onehot_line_has_its_band_and_the_star_its_legend_entry():
    # Issue 28 item 18: a tie with one-hot could not be judged from the figure (no band on
    # its line), and the star was not in the legend.
    curves = pd.DataFrame({"model": ["m"] * 3, "ablation": ["pretrained"] * 3,
                           "rel_depth": [0.0, 0.5, 1.0], "mean": [0.1, 0.7, 0.4],
                           "sd": [np.nan] * 3})
    best = pd.DataFrame({"model": ["m"], "ablation": ["pretrained"], "rel_depth": [0.5],
                         "mean": [0.7]})
    onehot = plots.Reference(0.5, 0.45, 0.56, "ci")
    fig = plots.depth_figure(curves, onehot, {"m": "#0072B2"}, "spearman", "t", best=best)
    ax = fig.axes[0]
    grey = [p for p in ax.patches
            if np.allclose(p.get_facecolor()[:3], to_rgb(plots.ONEHOT_GREY))]
    assert len(grey) == 1  # the one-hot band, from its interval
    ys = ax.transData.inverted().transform(
        grey[0].get_transform().transform(grey[0].get_path().vertices))[:, 1]
    assert (ys.min(), ys.max()) == pytest.approx((0.45, 0.56))
    texts = _legend_texts(fig)
    assert "layer chosen on validation" in texts and "one-hot baseline" in texts
    assert plots.BAND_LABELS["ci"] in texts
    star = next(h for h, t in zip(fig.legends[0].legend_handles, texts)
                if t == "layer chosen on validation")
    assert star.get_marker() == "*"
    # No star drawn, no star in the legend; a one-hot without an interval, no grey band.
    fig = plots.depth_figure(curves, plots.Reference(0.5), {"m": "#0072B2"}, "spearman", "t")
    assert "layer chosen on validation" not in _legend_texts(fig)
    assert not fig.axes[0].patches


def test_the_report_bands_the_onehot_line_with_its_interval(tmp_path, monkeypatch):
    task = protein_task(300)
    frames = [write_cell(tmp_path, "t", task, 1.0),
              write_cell(tmp_path, "t", task, 0.8, model="onehot", family="onehot",
                         n_params=0, n_layers=1)]
    csv = tmp_path / "results.csv"
    pd.concat(frames, ignore_index=True).to_csv(csv, index=False)
    drawn = []
    real = plots.depth_figure
    monkeypatch.setattr(plots, "depth_figure",
                        lambda *a, **k: drawn.append(a[1]) or real(*a, **k))
    make_report(csv, tmp_path / "out")
    intervals = pd.read_csv(tmp_path / "out" / "intervals.csv")
    arm = intervals[(intervals.model == "onehot") & (intervals.layer_choice == "best")].iloc[0]
    (reference,) = drawn
    assert reference.band == "ci" and arm.ci_low < reference.mean < arm.ci_high
    assert (reference.low, reference.high) == (arm.ci_low, arm.ci_high)
    index = (tmp_path / "out" / "index.html").read_text()
    assert "grey line: one-hot baseline (grey band: 95 % bootstrap interval over test " \
           "proteins)" in index


def test_one_hot_band_is_the_interval_of_the_selection_the_decisions_use():
    """selection.method=auto: intervals.csv holds a validation- and a cv-selected one-hot arm
    for a small-validation task; the figure's one-hot line and band are the cv arm's."""
    from ptransfer.analysis.report import _onehot_by_panel

    rows = pd.DataFrame({"task": ["t"], "eval_set": ["test"], "model": ["onehot"],
                         "family": ["onehot"], "checkpoint": ["final"], "ablation": ["pretrained"],
                         "ablation_scope": ["full"], "seed": [0], "layer": [0],
                         "best_layer": [True], "value": [0.57], "selection": ["cv"],
                         "cell_id": ["t__onehot__cv"]})
    intervals = pd.DataFrame({"task": ["t", "t"], "eval_set": ["test", "test"],
                              "family": ["onehot", "onehot"], "layer_choice": ["best", "best"],
                              "selection": ["val", "cv"], "ci_low": [0.50, 0.55],
                              "ci_high": [0.60, 0.59]})
    reference = _onehot_by_panel(rows, intervals)[("t", "test")]
    assert (reference.low, reference.high) == (0.55, 0.59)


def test_scaling_points_of_one_seed_get_the_test_interval_as_band():
    """Score vs size: a one-seed arm (pretrained) is banded by its 95 % interval over test
    proteins (intervals.csv, best layer, final checkpoint); a seeded arm keeps ±1 sd."""
    from ptransfer.analysis.report import _interval_bands

    points = pd.DataFrame({"task": ["t", "t"], "eval_set": ["test", "test"],
                           "model": ["m", "m"], "ablation": ["pretrained", "random_init"],
                           "mean": [0.8, 0.6], "sd": [np.nan, 0.02], "band_low": np.nan,
                           "band_high": np.nan, "band": ""})
    intervals = pd.DataFrame({
        "task": "t", "eval_set": "test", "model": "m", "checkpoint": "final",
        "checkpoint_step": np.nan, "ablation": ["pretrained", "pretrained", "random_init"],
        "layer_choice": ["best", "last", "best"], "n_seeds": [1, 1, 3],
        "selection": "val", "ci_low": [0.75, 0.1, 0.5], "ci_high": [0.85, 0.2, 0.7]})
    banded = _interval_bands(points, intervals).set_index("ablation")
    assert tuple(banded.loc["pretrained", ["band_low", "band_high", "band"]]) == \
        (0.75, 0.85, "ci")
    assert np.isnan(banded.loc["random_init", "band_low"])  # plots.bands adds its ±1 sd
