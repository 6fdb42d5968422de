"""The declared margin (analysis.margin): defaults, overrides, errors, and its only use
through the equivalence test (a wider margin can turn "unresolved" into "equivalent")."""

from __future__ import annotations

import pandas as pd
import pytest
from stats_fakes import protein_task, write_cell

from ptransfer.analysis.margins import DEFAULT_MARGINS, parse_margins
from ptransfer.cli import main

ONEHOT = {"model": "onehot", "family": "onehot", "n_params": 0, "n_layers": 1}


def test_defaults_and_overrides():
    assert parse_margins([]) == DEFAULT_MARGINS
    assert DEFAULT_MARGINS["spearman"] == 0.02 and DEFAULT_MARGINS["accuracy"] == 0.01
    assert DEFAULT_MARGINS["mse"] is None  # scale-dependent: no default
    margins = parse_margins(["analysis.margin.spearman=0.05", "mse=0.3", "accuracy=null"])
    assert margins["spearman"] == 0.05 and margins["mse"] == 0.3 and margins["accuracy"] is None


@pytest.mark.parametrize(("item", "words"), [("spearmann=0.1", "METRIC one of"),
                                             ("spearman=abc", "analysis.margin.spearman"),
                                             ("spearman=-0.1", "positive number"),
                                             ("spearman", "METRIC=VALUE")])
def test_bad_margins_name_the_item(item, words):
    with pytest.raises(ValueError, match=words):
        parse_margins([item])


def _tie(root, n=600):
    task = protein_task(n)
    return [write_cell(root, "t", task, 1.0, n_layers=1),
            write_cell(root, "t", task, 1.0, **ONEHOT)]


def test_collect_takes_the_margin_and_writes_it(tmp_path, capsys):
    """A tie at 600 proteins: unresolved within the default 0.02, equivalent within 0.1."""
    _tie(tmp_path)
    assert main(["collect", str(tmp_path)]) == 0
    comparisons = pd.read_csv(tmp_path / "comparisons.csv")
    transfer = comparisons[comparisons["decision"] == "transfer"].iloc[0]
    assert transfer["margin"] == 0.02 and transfer["verdict"] == "unresolved"
    assert main(["collect", str(tmp_path), "analysis.margin.spearman=0.1"]) == 0
    comparisons = pd.read_csv(tmp_path / "comparisons.csv")
    transfer = comparisons[comparisons["decision"] == "transfer"].iloc[0]
    assert transfer["margin"] == 0.1 and transfer["verdict"] == "equivalent"
    taxonomy = pd.read_csv(tmp_path / "taxonomy.csv")
    assert taxonomy.loc[0, "class"] == "no benefit" and taxonomy.loc[0, "margin"] == 0.1


def test_a_bad_margin_is_refused_before_anything_is_written(tmp_path, capsys):
    _tie(tmp_path)
    assert main(["collect", str(tmp_path), "--margin", "spearman=-1"]) == 1
    assert "analysis.margin.spearman: must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.parametrize(("item", "widest"), [("spearman=1e9", "2"), ("pearson=2.5", "2"),
                                              ("accuracy=1.5", "1"), ("roc_auc=1.01", "1"),
                                              ("ndcg=2", "1"), ("macro_f1=3", "1")])
def test_a_margin_beyond_the_metric_range_is_refused(item, widest):
    # Issue 28 item 9: spearman=1e9 was accepted and called -0.258 [-0.41, -0.11] equivalent.
    metric = item.split("=")[0]
    with pytest.raises(ValueError, match=rf"^analysis.margin.{metric}=\S+: beyond the widest "
                                         rf"possible difference of two {metric} values "
                                         rf"\({widest},"):
        parse_margins([item])


def test_a_large_margin_warns_and_the_range_itself_is_accepted(caplog):
    with caplog.at_level("WARNING"):
        margins = parse_margins(["spearman=2", "accuracy=0.1", "pearson=0.2", "mse=1e9"])
    assert margins == {**DEFAULT_MARGINS, "spearman": 2.0, "accuracy": 0.1, "pearson": 0.2,
                       "mse": 1e9}
    warned = [r.getMessage() for r in caplog.records]
    # above a tenth of the widest difference only: spearman 2 > 0.2; pearson 0.2 and
    # accuracy 0.1 sit on the bound; mse has no range
    assert len(warned) == 1 and warned[0].startswith("analysis.margin.spearman=2 is above 0.2")


def test_a_margin_beyond_the_range_stops_collect_before_anything_is_written(tmp_path, capsys):
    _tie(tmp_path)
    assert main(["collect", str(tmp_path), "analysis.margin.spearman=1e9"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "analysis.margin.spearman=1e+09: beyond" in err
    assert not (tmp_path / "results.csv").exists()
