"""A cell under ``selection=cv`` / ``auto`` (issue 24): the cross-validated selection is
written beside the cell as ``<cell_id>__cv``, its rows say ``selection`` cv, its validation
rows hold out-of-fold predictions, the cell's own rows do not change, and collect reports
both selections side by side. Tiny random-init ESM-2 on the synthetic task (90 validation
proteins: below the 100 of ``auto``)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cell_helpers import cell_config

from ptransfer import metrics
from ptransfer.analysis.collect import collect
from ptransfer.analysis.predictions import read_predictions
from ptransfer.cell.key import cell_key
from ptransfer.cell.run import run_cell
from ptransfer.cell.spec import cell_spec

NUMBERS = ["layer", "eval_set", "metric", "value", "best_layer", "hparams"]


def _cell(results, *overrides):
    cfg = cell_config(results, "task=synthetic", "ablation=random_init", *overrides,
                      tiny="esm2")
    frame = run_cell(cfg)
    return cell_key(cell_spec(cfg)), frame


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("cv")
    key, frame = _cell(results, "selection.method=cv")
    return results, key, frame


def test_the_cross_validated_selection_is_written_beside_the_cell(cv_run, tmp_path):
    results, key, frame = cv_run
    sibling = key.cross_validated()
    status = json.loads((sibling.dir / "status.json").read_text())
    assert status["state"] == "done" and status["of"] == key.cell_id
    rows = pd.read_csv(sibling.dir / "rows.csv")
    assert (rows["selection"] == "cv").all() and (rows["cell_id"] == sibling.cell_id).all()
    assert rows.loc[rows["best_layer"], "layer"].nunique() == 1
    assert set(rows["eval_set"]) == {"val", "test"}
    # the cell's own rows are those of a validation-selected run (the key differs: cv adds
    # a cell, so it is part of the key; the numbers do not)
    val_key, val_frame = _cell(tmp_path)
    assert val_key.cell_id != key.cell_id and "selection" not in val_frame
    pd.testing.assert_frame_equal(frame[NUMBERS].reset_index(drop=True),
                                  val_frame[NUMBERS].reset_index(drop=True))
    assert not val_key.cross_validated().dir.exists()


def test_validation_rows_of_the_cv_cell_are_out_of_fold(cv_run):
    """Each layer's val value is the metric of its stored validation predictions (each from
    a fold probe that did not see the protein), and its probe saw train + validation."""
    _, key, _ = cv_run
    sibling = key.cross_validated()
    rows = pd.read_csv(sibling.dir / "rows.csv")
    predictions = read_predictions(sibling.dir / "predictions.parquet")
    main = rows[(rows["metric"] == "spearman")]
    for _, row in main.iterrows():
        part = predictions[(predictions["eval_set"] == row["eval_set"])
                           & (predictions["layer"] == row["layer"])]
        assert metrics.spearman(part["y_true"], part["y_pred"]) == pytest.approx(
            row["value"], abs=1e-5)
    n_train = rows["n_train"].iloc[0]
    val_rows = rows[rows["eval_set"] == "val"]["n_eval"].iloc[0]
    assert n_train == 420 + val_rows  # 70 % of 600 trained on, plus every validation protein


def test_auto_cross_validates_only_below_the_minimum(tmp_path):
    key, _ = _cell(tmp_path / "small", "selection.method=auto")  # 90 < 100 proteins
    assert key.cross_validated().dir.is_dir()
    key, _ = _cell(tmp_path / "large", "selection.method=auto", "selection.min_val_items=50")
    assert not key.cross_validated().dir.exists()


def test_collect_reports_both_selections_side_by_side(cv_run):
    results, key, _ = cv_run
    done = collect(results, n_resamples=200)
    assert {key.cell_id, key.cross_validated().cell_id} <= {c.split("/")[-1]
                                                            for c in done.cells}
    summary = pd.read_csv(results / "summary.csv")
    assert sorted(summary["selection"]) == ["cv", "val"]
    warning = summary.set_index("selection").loc["val", "warning"]
    assert "validates on 90 proteins (< 100)" in warning
    assert "the decisions use the cells selected by cross-validation" in warning


def test_a_bad_selection_method_is_named(tmp_path):
    cfg = cell_config(tmp_path, "task=synthetic", "selection.method=holdout")
    with pytest.raises(ValueError, match="config key 'selection.method': expected one of"):
        cell_spec(cfg)


def test_the_cell_flags_the_layer_cv_chose_not_the_best_on_validation(tmp_path, monkeypatch):
    """Plumbing: whatever layer the cross-validation picks is the cv rows' best layer, even
    one whose out-of-fold validation score is not the highest."""
    import ptransfer.heads.fit_cv as fit_cv

    real = fit_cv.fit_cv_layers
    chosen = {}

    def worst_on_validation(*args, **kwargs):
        fits, _ = real(*args, **kwargs)
        chosen["layer"] = int(min(fits, key=lambda f: f.scores["val"]["spearman"]).layer)
        return fits, chosen["layer"]

    monkeypatch.setattr(fit_cv, "fit_cv_layers", worst_on_validation)
    key, _ = _cell(tmp_path, "selection.method=cv")
    rows = pd.read_csv(key.cross_validated().dir / "rows.csv")
    assert set(rows.loc[rows["best_layer"], "layer"]) == {chosen["layer"]}
