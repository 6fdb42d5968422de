"""scripts/readme_results.py: README's results tables come from collect's files, value for
value (known-truth cells in the project's formats, collected as a user would)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
from stats_fakes import protein_task, write_cell

from ptransfer.analysis.collect import collect

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "readme_results.py"
ONEHOT = {"model": "onehot", "family": "onehot", "n_params": 0, "n_layers": 1}


def _script():
    spec = importlib.util.spec_from_file_location("readme_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(root, model, n_params, quality):
    write_cell(root, "t", TASK, quality, model=model, family="fam", n_params=n_params)
    for ablation in ("random_init", "stat_transfer"):
        for seed in (0, 1, 2):
            write_cell(root, "t", TASK, 0.3 + 0.05 * seed, model=model, family="fam",
                       n_params=n_params, ablation=ablation, seed=seed)


TASK = protein_task(300)


def test_size_and_ablation_tables_carry_collects_numbers_and_verdicts(tmp_path, capsys):
    _cells(tmp_path, "small", 1e5, 0.8)
    _cells(tmp_path, "large", 2e7, 2.0)
    write_cell(tmp_path, "t", TASK, 0.5, **ONEHOT)
    collect(tmp_path, n_resamples=200)
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    taxonomy = pd.read_csv(tmp_path / "taxonomy.csv").set_index("model")
    script = _script()

    script.main([str(tmp_path), "--family", "fam"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 2  # header, rule, one row per size (smaller first)
    small, large = (line.split(" | ") for line in lines[2:])
    assert small[1] == "small (0.10M)" and large[1] == "large (20.0M)"
    row = summary.loc["large"]
    assert large[2] == (f"{row.pretrained_best:.3f} [{row.pretrained_best_ci_low:.3f}, "
                        f"{row.pretrained_best_ci_high:.3f}]")
    assert large[3].startswith(f"{row.random_init_best:.3f} ± {row.random_init_best_sd:.3f} [")
    assert large[8] == taxonomy.loc["large", "alignment_size"] == "aligned"
    assert small[8] == "absent"
    assert large[9].rstrip(" |") == row.classification

    script.main([str(tmp_path), "--model", "large"])
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 3 and table[2].split(" | ")[-1].rstrip(" |") == row.classification
