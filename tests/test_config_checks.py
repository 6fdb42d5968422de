"""Config mistakes are one line naming the key, before anything runs (issue 19 items 4, 5, 13).

Everything runs ``ptransfer.cli.main`` in-process; nothing here trains or embeds.
"""

from __future__ import annotations

import pytest

from ptransfer.cli import main


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _main(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def _one_error_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out, out
    return lines[0]


# -- item 4: pretrain rejects unknown keys as run does ----------------------------------------

@pytest.mark.parametrize("override,key", [("+max_step=3", "max_step"),
                                          ("+schedule.max_step=3", "schedule.max_step"),
                                          ("+data.fastaa=x.fa", "data.fastaa")])
def test_pretrain_rejects_an_unknown_key_listing_the_known_ones(work, capsys, override, key):
    code, out = _main(capsys, "pretrain", override, "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and line.startswith("ptransfer pretrain: error: unknown config key(s)")
    assert f"'{key}'" in line
    known = "max_steps" if key.startswith("schedule") else ("fasta" if "data" in key
                                                            else "schedule")
    assert known in line.split("; known")[1]
    assert not (work / "res").exists()  # nothing trained, nothing written


def test_pretrain_checks_value_types(work, capsys):
    code, out = _main(capsys, "pretrain", "seed=abc", "results_dir=res")
    assert code == 1 and "config key 'seed': expected an integer" in _one_error_line(out)
