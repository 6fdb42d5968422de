"""Log lines name their cell (parallel cells stay readable); no progress bar for no work."""

from __future__ import annotations

import io
import logging
import logging.config

import pytest
import yaml
from cli_helpers import REPO
from hydra import compose, initialize_config_dir

from ptransfer.cell.key import cell_key
from ptransfer.cell.logs import CellFilter, enter_cell, leave_cell
from ptransfer.cell.spec import cell_spec
from ptransfer.embed.extract import embed_sequences
from ptransfer.encoders.onehot import OneHotEncoder
from ptransfer.sweep.job import run_job


@pytest.fixture()
def project_logging():
    """The project's console logging config (conf/hydra/job_logging/ptransfer.yaml) with the
    console writing to a buffer (returned) and no file handler."""
    config = yaml.safe_load((REPO / "conf/hydra/job_logging/ptransfer.yaml").read_text())
    del config["handlers"]["file"]
    config["root"]["handlers"] = ["console"]
    console = io.StringIO()
    config["handlers"]["console"]["stream"] = console
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logging.config.dictConfig(config)
    yield console
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_lines_inside_a_cell_carry_its_id(project_logging):
    log = logging.getLogger("ptransfer.heads.somewhere")
    log.info("before")
    token = enter_cell("gb1__onehot__abc")
    log.info("layer 0/0: val spearman=0.5")
    leave_cell(token)
    log.info("after")
    lines = project_logging.getvalue().splitlines()
    assert "][gb1__onehot__abc][ptransfer.heads.somewhere][INFO] layer 0/0" in lines[1]
    assert "gb1__onehot__abc" not in lines[0] and "gb1__onehot__abc" not in lines[2]
    assert "][ptransfer.heads.somewhere][INFO] before" in lines[0]


def test_every_record_of_a_job_names_the_cell(tmp_path, caplog):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "task=synthetic", "task.n_variants=120", "model=onehot", "extract.progress=false",
            f"results_dir={tmp_path}", "head.ridge.alphas=[1.0]"])
    caplog.handler.addFilter(CellFilter())
    with caplog.at_level(logging.INFO):
        assert run_job(cfg)["state"] == "done"
        logging.getLogger("ptransfer").info("outside")
    cell = f"[{cell_key(cell_spec(cfg)).cell_id}]"
    *job, outside = caplog.records
    assert any("layer 0/0" in r.getMessage() for r in job)
    assert all(r.cell == cell for r in job)
    assert outside.getMessage() == "outside" and outside.cell == ""


def test_no_progress_bar_when_nothing_to_embed(capsys):
    encoder = OneHotEncoder().load(None, ablation="pretrained", seed=0)
    assert list(embed_sequences(encoder, [], progress=True)) == []
    assert "res" not in capsys.readouterr().err
    assert len(list(embed_sequences(encoder, ["ACDE"], progress=True))) == 1
    assert "res" in capsys.readouterr().err  # the bar is shown when there is work
