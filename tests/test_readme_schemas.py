"""README.md's "Output schemas" are the files ptransfer writes, column for column.

A tiny results folder, made in seconds: real cells through ``run_cell`` (one-hot on the
synthetic task; a tiny random-init ESM-2 with ``selection.method=cv``, which writes its
``<cell_id>__cv`` sibling and an embedding store; one-hot on a per-protein classification
task, whose predictions carry class probabilities; a task whose validation targets are
constant, so no layer is best; a cell that fails before any model is loaded) beside
known-truth cells in the project's formats (``stats_fakes``: checkpoints, a smaller model,
both ablations in both scopes, one-hot, LoRA fine-tunes), then ``collect``. Every column (or
key, or file) of everything written must be documented in README's schema table for that
file, and every name README documents must be in some file written.

README's notation, parsed here: a schema table names its file(s) in backticks in the first
cell of its header (``| column of `intervals.csv` | meaning |``); the first cell of each row
lists names in backticks, several separated by commas; in a name, ``<a|b>`` (``<a\\|b>``
inside a table) stands for each alternative in turn and ``<k>`` (no ``|``) for any word or
number; "(optional)" in the first cell marks names a file may lack (written only by some
cells, or only in some states), which still must appear in some file written.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from cell_helpers import cell_config
from stats_fakes import protein_task, write_cell

from ptransfer.analysis.collect import MANIFEST, collect
from ptransfer.analysis.predictions import PREDICTIONS_FILE
from ptransfer.analysis.rows import ROWS_FILE

README = Path(__file__).resolve().parents[1] / "README.md"
AMINO = list("ACDEFGHIKLMNPQRSTVWY")
CELL_FOLDER = "results/cells/<cell_id>/"
RESULTS_FOLDER = "results/"
MANIFEST_FILE = "<shard>.json"


# ---------------------------------------------------------------- README's notation


@dataclass(frozen=True)
class Documented:
    """One name a schema table documents (alternatives already expanded)."""

    name: str
    pattern: re.Pattern
    optional: bool
    detail: tuple[str, ...] = ()  # the row's other cells (type, meaning)


def _cells(line: str) -> list[str]:
    """A Markdown table line's cells; ``\\|`` is a pipe inside a cell."""
    return [c.strip().replace("\\|", "|")
            for c in re.split(r"(?<!\\)\|", line.strip().removeprefix("|").removesuffix("|"))]


def expand(name: str) -> list[str]:
    """Each alternative of every ``<a|b>`` in turn (placeholders ``<k>`` stay)."""
    parts = re.split(r"(<[^<>]*\|[^<>]*>)", name)
    choices = [p[1:-1].split("|") if p.startswith("<") and "|" in p else [p] for p in parts]
    return ["".join(c) for c in itertools.product(*choices)]


def as_pattern(name: str) -> re.Pattern:
    """``name`` with each placeholder ``<k>`` matching any word or number."""
    parts = re.split(r"(<[^<>|]+>)", name)
    return re.compile("".join("[A-Za-z0-9]+" if p.startswith("<") else re.escape(p)
                              for p in parts))


def schema_tables(text: str) -> dict[str, list[Documented]]:
    """file -> the names its schema tables document (see the module docstring)."""
    lines = text.splitlines()
    out: dict[str, list[Documented]] = {}
    for i, line in enumerate(lines[:-1]):
        starts = line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))
        if not (starts and re.match(r"^\|\s*:?-", lines[i + 1])):
            continue
        files = re.findall(r"`([^`]+)`", _cells(line)[0])
        for row in itertools.takewhile(lambda x: x.startswith("|"), lines[i + 2:]):
            cells = _cells(row)
            optional = "(optional)" in cells[0]
            for written in re.findall(r"`([^`]+)`", cells[0]):
                for name in expand(written):
                    for file in files:
                        out.setdefault(file, []).append(
                            Documented(name, as_pattern(name), optional, tuple(cells[1:])))
    return out


def output_schemas(text: str) -> str:
    """README's "Output schemas" section (to the next level-2 heading)."""
    start = text.index("\n## Output schemas")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def problems(file: str, written: list[list[str]], documented: list[Documented],
             partial: list[list[str]] = (), folder: bool = False) -> list[str]:
    """What README gets wrong about ``file``: a name written that no table documents, a
    required name that a copy in ``written`` lacks (``partial`` copies, such as a failed
    cell's folder, may lack any), a documented name that no copy has (for a ``folder``,
    optional entries are exempt: a sweep's ``hydra/`` is not made in-process)."""
    if not documented:
        return [f"{file}: no schema table in README's Output schemas"]
    out = []
    for names in [*written, *partial]:
        out += [f"{file}: {n!r} is written but not documented" for n in names
                if not any(d.pattern.fullmatch(n) for d in documented)]
    for names in written:
        out += [f"{file}: {d.name!r} is documented but a copy written lacks it"
                for d in documented
                if not d.optional and not any(d.pattern.fullmatch(n) for n in names)]
    every = {n for names in [*written, *partial] for n in names}
    out += [f"{file}: {d.name!r} is documented but never written" for d in documented
            if not (folder and d.optional) and not any(d.pattern.fullmatch(n) for n in every)]
    return list(dict.fromkeys(out))


def test_the_notation_reads_patterns_alternatives_and_optional_names():
    text = ("| column of `a.csv`, `b.csv` | type | meaning |\n|---|---|---|\n"
            "| `x`, `<p\\|q>_<best\\|last>` | int | two |\n| `proba_<k>` (optional) | f | p |\n\n"
            "| not a schema | meaning |\n|---|---|\n| `y` | no file named |\n")
    tables = schema_tables(text)
    assert set(tables) == {"a.csv", "b.csv"}
    names = [d.name for d in tables["a.csv"]]
    assert names == ["x", "p_best", "p_last", "q_best", "q_last", "proba_<k>"]
    proba = tables["b.csv"][-1]
    assert proba.optional and proba.detail == ("f", "p")
    assert proba.pattern.fullmatch("proba_12") and not proba.pattern.fullmatch("proba_")
    assert problems("a.csv", [["x", "p_best", "p_last", "q_best", "q_last"]],
                    tables["a.csv"]) == ["a.csv: 'proba_<k>' is documented but never written"]
    assert problems("a.csv", [["x", "p_best", "p_last", "q_best", "z", "proba_0"]],
                    tables["a.csv"]) == ["a.csv: 'z' is written but not documented",
                                         "a.csv: 'q_last' is documented but a copy written "
                                         "lacks it",
                                         "a.csv: 'q_last' is documented but never written"]


# ---------------------------------------------------------------- what ptransfer writes


def _csv_task(path: Path, rows: list[tuple[str, object, str]]) -> Path:
    path.write_text("sequence,target,set\n" + "".join(f"{s},{t},{p}\n" for s, t, p in rows))
    return path


def _sequences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AMINO, size=int(rng.integers(8, 16)))) for _ in range(n)]


def _split(i: int) -> str:
    return (*("train",) * 6, "val", "val", "test", "test")[i % 10]


def _real_cells(root: Path, tmp: Path) -> list[dict]:
    """The real cells (module docstring); returns the statuses seen while they ran."""
    import ptransfer.cell.fit as fit
    from ptransfer.cell.run import run_cell
    from ptransfer.sweep.job import run_job

    classes = _csv_task(tmp / "classes.csv", [(s, "abc"[i % 3], _split(i))
                                              for i, s in enumerate(_sequences(60, 0))])
    flat = _csv_task(tmp / "flat.csv", [(s, 1.0 if _split(i) == "val" else float(i), _split(i))
                                        for i, s in enumerate(_sequences(40, 1))])
    one_class = _csv_task(tmp / "one_class.csv", [(s, "a", _split(i))
                                                  for i, s in enumerate(_sequences(20, 2))])
    running, layer_fits = [], fit.layer_fits

    def spy(*args, **kwargs):  # what status.json says while the cell runs
        for path in root.glob("cells/*/status.json"):
            status = json.loads(path.read_text())
            if status["state"] == "running":
                running.append(status)
        return layer_fits(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fit, "layer_fits", spy)
        run_cell(cell_config(root, "task=synthetic"))
    run_cell(cell_config(root, "task=synthetic", "ablation=random_init", "selection.method=cv",
                         tiny="esm2"))
    run_cell(cell_config(root, "task=csv", f"task.path={classes}", "task.kind=classification"))
    run_cell(cell_config(root, "task=csv", f"task.path={flat}"))
    failed = run_job(cell_config(root, "task=csv", f"task.path={one_class}",
                                 "task.kind=classification"))
    assert failed["state"] == "failed"  # one class in train: refused before any model
    return running


def _known_truth_cells(root: Path) -> None:
    task = protein_task(60)
    shared = {"noise_key": "m", "shared": 0.99}
    for step, quality in ((1000, 0.5), (2000, 1.0)):
        write_cell(root, "t", task, quality, checkpoint=f"step{step}", step=step, **shared)
    write_cell(root, "t", task, 1.6, step=4000, **shared)
    write_cell(root, "t", task, 1.0, model="small", n_params=5, step=4000, **shared)
    for seed in (0, 1):
        for ablation, scope in (("random_init", "full"), ("stat_transfer", "full"),
                                ("random_init", "reference")):
            write_cell(root, "t", task, 0.3, ablation=ablation, scope=scope, seed=seed, **shared)
        write_cell(root, "t", task, 2.0, tune="lora", seed=seed, **shared)
        write_cell(root, "t", task, 0.5, tune="lora", ablation="random_init", seed=seed,
                   **shared)
    write_cell(root, "t", task, 0.4, model="onehot", family="onehot", n_params=0, n_layers=1)


@dataclass
class Written:
    root: Path  # the results folder
    collected: object  # what collect did (``collect.Collected``)
    running: list[dict]  # the statuses seen while a cell ran
    real: list[Path]  # the folders of the cells run for real (known-truth cells write fewer files)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Written:
    tmp = tmp_path_factory.mktemp("schemas")
    root = tmp / "results"
    with pytest.MonkeyPatch.context() as patch:  # as conftest's per-test isolation
        for name, value in (("TORCH_HOME", tmp / "torch"), ("HF_HOME", tmp / "hf"),
                            ("HF_HUB_OFFLINE", "1"), ("PTRANSFER_OFFLINE", "1"),
                            ("PTRANSFER_DEVICES_DIR", tmp / "devices")):
            patch.setenv(name, str(value))
        running = _real_cells(root, tmp)
    real = _cell_dirs(root)
    _known_truth_cells(root)
    return Written(root, collect(root, n_resamples=100), running, real)


@pytest.fixture(scope="module")
def documented() -> dict[str, list[Documented]]:
    return schema_tables(output_schemas(README.read_text()))


def _columns(path: Path) -> list[str]:
    if path.suffix == ".csv":
        return list(pd.read_csv(path, nrows=0).columns)
    if path.suffix == ".json":
        return list(json.loads(path.read_text()))
    header = next(line for line in path.read_text().splitlines() if line.startswith("| "))
    return _cells(header)  # summary.md: its table's header


def test_every_table_collect_writes_is_documented(written, documented):
    root = written.root
    names = [p.name for p in written.collected.tables]
    assert {"results.csv", "summary.csv", "summary.md", "intervals.csv", "comparisons.csv",
            "taxonomy.csv", "depth.csv", "repstat.csv", MANIFEST} <= set(names)
    found = [p for name in names
             for p in problems(name, [_columns(root / name)], documented.get(name, []))]
    assert not found, "\n".join(found)


def _cell_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "cells").iterdir() if p.is_dir())


def test_every_cells_rows_and_predictions_are_documented(written, documented):
    cells = [c for c in _cell_dirs(written.root) if (c / ROWS_FILE).is_file()]
    rows = [_columns(c / ROWS_FILE) for c in cells]
    predictions = [pd.read_parquet(c / PREDICTIONS_FILE) for c in cells]
    found = problems(ROWS_FILE, rows, documented.get(ROWS_FILE, []))
    found += problems(PREDICTIONS_FILE, [list(p.columns) for p in predictions],
                      documented.get(PREDICTIONS_FILE, []))
    assert not found, "\n".join(found)
    types = {"string (dictionary)": {"category"}, "int16": {"int16"}, "int32": {"int32"},
             "float32": {"float32"}, "float32 | int16": {"float32", "int16"}}
    for entry in documented[PREDICTIONS_FILE]:
        allowed = types[entry.detail[0]]
        for frame in predictions:
            for column in (c for c in frame.columns if entry.pattern.fullmatch(c)):
                assert str(frame[column].dtype) in allowed, (column, frame[column].dtype)


def test_cell_folders_and_statuses_are_documented(written, documented):
    """The files of a done cell, of its ``__cv`` sibling (no config.yaml) and of a cell that
    failed before its model loaded (status.json alone); the fields of status.json while
    running, done, done without a best layer, as a ``__cv`` sibling, and failed."""
    cells, running = written.real, written.running
    statuses = [json.loads((c / "status.json").read_text()) for c in cells]
    files = [sorted(p.name for p in c.iterdir()) for c in cells]
    whole = [f for c, f, s in zip(cells, files, statuses)
             if s["state"] == "done" and not c.name.endswith("__cv")]
    sibling = [f for c, f in zip(cells, files) if c.name.endswith("__cv")]
    failed = [f for f, s in zip(files, statuses) if s["state"] == "failed"]
    assert sibling == [[PREDICTIONS_FILE, ROWS_FILE, "status.json"]]
    assert failed == [["status.json"]]
    found = problems(CELL_FOLDER, whole, documented.get(CELL_FOLDER, []),
                     partial=sibling + failed, folder=True)
    assert {"running", "done", "failed"} <= {s["state"] for s in running + statuses}
    assert any("note" in s for s in statuses) and any("of" in s for s in statuses)
    found += problems("status.json", [list(s) for s in running + statuses],
                      documented.get("status.json", []))
    assert not found, "\n".join(found)


def test_the_results_folder_is_documented(written, documented):
    entries = sorted(p.name + ("/" if p.is_dir() and not p.is_symlink() else "")
                     for p in written.root.iterdir())
    found = problems(RESULTS_FOLDER, [entries], documented.get(RESULTS_FOLDER, []),
                     folder=True)
    assert not found, "\n".join(found)


def test_the_embedding_store_is_documented(written, documented, tmp_path):
    """A shard's manifest, as its writer wrote it and as a reader adopts a shard published
    without one; every dataset and attribute of the index file and of a shard file is named
    in README's store section."""
    from ptransfer.embed.publication import shard_contents

    (index,) = (written.root / "embeddings").glob("*/*.h5")
    shards = index.with_name(index.name + ".shards")
    (manifest,) = shards.glob("*.json")
    adopted = shutil.copytree(shards, tmp_path / "shards")
    (adopted / manifest.name).unlink()
    shard_contents(adopted, manifest.stem, writable=True)  # published without its manifest
    keys = [list(json.loads(p.read_text())) for p in (manifest, adopted / manifest.name)]
    found = problems(MANIFEST_FILE, keys, documented.get(MANIFEST_FILE, []))
    section = output_schemas(README.read_text())
    store = section[section.index("### Embedding store"):]
    (shard,) = shards.glob("*.h5")
    for path in (index, shard):
        with h5py.File(path) as handle:
            names = {re.sub(r"^layer_\d+$", "layer_NNN", k) for k in handle} | set(handle.attrs)
        found += [f"{path.name}: {n!r} is written but README's store section does not name it"
                  for n in sorted(names) if not re.search(rf"(?<![\w<]){n}(?![\w>])", store)]
    assert not found, "\n".join(found)
