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
