"""Bootstrap replicates of every (cell, test set, layer) a table needs, from the cells'
``predictions.parquet`` files (schema: ``ptransfer.analysis.predictions``).

Per panel (task, test set) one matrix of resample counts over the panel's proteins is drawn
(seeded by the panel's name), and every cell and layer of the panel is scored on those same
resamples: that is what makes comparisons *paired* (the same resampled items for both arms,
matched by item id). Only the layers a table reports are scored: each cell's
best-validation and last layer, and up to ``DEPTH_POINTS`` evenly spaced layers of
pretrained encoders (the depth trend).
A cell without a predictions file gets a note instead of replicates, never an error.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ptransfer.analysis.cell_files import STATUS_FILE
from ptransfer.analysis.intervals import (
    N_RESAMPLES,
    REPLICATE,
    Elements,
    replicates,
    resample_counts,
)
from ptransfer.analysis.panels import ONEHOT_FAMILY, PANEL
from ptransfer.analysis.predictions import BASE_COLUMNS, PREDICTIONS_FILE

log = logging.getLogger(__name__)

DEPTH_POINTS = 9


@dataclass
class Replicates:
    """Replicates keyed by (cell_id, eval_set, layer) -> B values, with what is missing.

    ``items``: (cell_id, eval_set) -> sorted item ids scored (for the pairing check);
    ``n_scored``: (cell_id, eval_set) -> scored elements (proteins or residues);
    ``notes``: (cell_id, eval_set) -> why there are no replicates (missing file, metric).
    """

    n_resamples: int
    seed: int
    values: dict = field(default_factory=dict)
    items: dict = field(default_factory=dict)
    n_scored: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)


def stable_seed(*parts) -> int:
    """A seed from names (CRC32): the same panel gets the same resamples in every run."""
    return zlib.crc32("|".join(map(str, parts)).encode())


def find_predictions(root: str | Path | None) -> dict[str, Path]:
    """cell_id -> predictions file under ``root`` (``.../<cell_id>/predictions.parquet``)."""
    if root is None or not Path(root).is_dir():
        return {}
    return {p.parent.name: p for p in sorted(Path(root).rglob(PREDICTIONS_FILE))}


def depth_layers(n_layers: int) -> list[int]:
    """The layers of the depth trend: at most ``DEPTH_POINTS``, evenly spaced, first and last
    included (a rank trend needs no more; scoring all 57 CARP layers on 80k AAV items would
    dominate collect's time)."""
    return sorted({int(round(x)) for x in np.linspace(0, n_layers - 1,
                                                      min(n_layers, DEPTH_POINTS))})


def needed_layers(rows: pd.DataFrame) -> dict[str, set[int]]:
    """cell_id -> layers to score: best-validation and last, and for pretrained PLMs the
    depth-trend layers (``depth_layers``)."""
    out: dict[str, set[int]] = {}
    for cell_id, cell in rows.groupby("cell_id", sort=False):
        first = cell.iloc[0]
        layers = set(cell.loc[cell["best_layer"], "layer"].astype(int))
        layers.add(int(first["n_layers"]) - 1)
        if first["ablation"] == "pretrained" and first["family"] != ONEHOT_FAMILY:
            layers |= set(depth_layers(int(first["n_layers"])))
        out[str(cell_id)] = layers
    return out


def _read_blocks(path: Path, eval_sets: set[str], layers: set[int]) -> pd.DataFrame:
    """The rows of one predictions file on the wanted test sets and layers."""
    try:  # the filter lets pyarrow skip row groups of unwanted layers (most of a file)
        frame = pd.read_parquet(path, filters=[("layer", "in", sorted(layers))])
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable predictions file ({err})") from err
    missing = [c for c in BASE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a ptransfer predictions file, missing columns {missing}")
    return frame[frame["eval_set"].isin(list(eval_sets))]


def missing_predictions_note(root: str | Path | None, files: dict[str, Path]) -> str:
    """Why a cell has no predictions file: no cell folder under ``root`` at all (a results
    table moved away from its cells), or none for this cell (an older cell)."""
    where = Path(root).resolve() if root is not None else None
    if where is None or not any(where.rglob(STATUS_FILE)):
        return (f"no predictions.parquet: cells folder not found, no cell folder under "
                f"{where} (the cells are looked for beside results.csv: was it moved?)")
    return f"no predictions.parquet for this cell under {where} (older cell)"


def _panel_blocks(rows: pd.DataFrame, files: dict[str, Path], reps: Replicates,
                  layers: dict[str, set[int]], missing_note: str) -> dict:
    """(task, eval_set) -> [(cell_id, frame of that cell's predictions on it)]."""
    blocks: dict[tuple, list] = {}
    for cell_id, cell in rows.groupby("cell_id", sort=False):
        cell_id = str(cell_id)
        eval_sets = set(cell["eval_set"].astype(str))
        task = cell["task"].iloc[0]
        if cell_id not in files:
            for eval_set in eval_sets:
                reps.notes[(cell_id, eval_set)] = missing_note
            continue
        frame = _read_blocks(files[cell_id], eval_sets, layers[cell_id])
        for eval_set, part in frame.groupby("eval_set", sort=False, observed=True):
            blocks.setdefault((task, str(eval_set)), []).append((cell_id, part))
        for eval_set in eval_sets - {str(e) for e in frame["eval_set"].unique()}:
            reps.notes[(cell_id, eval_set)] = f"predictions.parquet has no rows for {eval_set}"
    return blocks


def _item_codes(items: pd.Series, universe: pd.Index) -> np.ndarray:
    """Index of each row's item in ``universe``, through the categorical codes (converting
    millions of per-residue rows to strings would dominate collect's time)."""
    items = items.astype("category")
    return universe.get_indexer(items.cat.categories.astype(str))[items.cat.codes.to_numpy()]


def _used_items(items: pd.Series) -> pd.Index:
    items = items.astype("category")
    return pd.Index(items.cat.categories.astype(str)[np.unique(items.cat.codes.to_numpy())])


def _universe(cells: list) -> pd.Index:
    """Sorted union of the item ids of a panel's cells."""
    index = pd.Index([], dtype=object)
    for _, part in cells:
        index = index.union(_used_items(part["item"]))
    return index.sort_values()


def _elements_of(part: pd.DataFrame, universe: pd.Index, cache: dict):
    """Elements (shared by cells with identical items, positions and targets) and the
    order that sorts ``part``'s rows of one layer by (item, position)."""
    codes = _item_codes(part["item"], universe)
    order = np.lexsort((part["position"].to_numpy(), codes))
    codes, positions = codes[order], part["position"].to_numpy()[order]
    y_true = part["y_true"].to_numpy()[order]
    key = (codes.tobytes(), positions.tobytes(), y_true.tobytes())
    if key not in cache:
        cache[key] = Elements(y_true, codes, len(universe))
    return cache[key], order


def _score_panel(metric: str, cells: list, counts: np.ndarray, reps: Replicates,
                 eval_set: str) -> None:
    universe = _universe(cells)
    elements_cache: dict = {}
    jobs: dict[int, tuple[Elements, list, list]] = {}
    for cell_id, part in cells:
        for layer, block in part.groupby("layer", sort=True):
            elements, order = _elements_of(block, universe, elements_cache)
            job = jobs.setdefault(id(elements), (elements, [], []))
            job[1].append(block["y_pred"].to_numpy()[order])
            job[2].append((cell_id, eval_set, int(layer)))
        reps.items[(cell_id, eval_set)] = np.unique(_item_codes(part["item"], universe))
        reps.n_scored[(cell_id, eval_set)] = int(len(part) // max(part["layer"].nunique(), 1))
    for elements, predictions, keys in jobs.values():
        values = replicates(metric, counts, elements, predictions)
        reps.values.update(zip(keys, values))


def compute_replicates(rows: pd.DataFrame, root: str | Path | None,
                       n_resamples: int = N_RESAMPLES, seed: int = 0,
                       layers: dict[str, set[int]] | None = None) -> Replicates:
    """Replicates of every needed (cell, eval set, layer) of ``rows`` (``main_test_rows``):
    ``needed_layers`` and, per cell id, the ``layers`` given."""
    reps = Replicates(n_resamples, seed)
    files = find_predictions(root)
    missing = missing_predictions_note(root, files)
    if not files and len(rows):
        log.warning("%s; no interval can be computed", missing)
    metric_of = rows.groupby("task")["metric"].first().to_dict()
    wanted = needed_layers(rows)
    for cell_id, extra in (layers or {}).items():
        wanted.setdefault(cell_id, set()).update(extra)
    for (task, eval_set), cells in _panel_blocks(rows, files, reps, wanted, missing).items():
        metric = metric_of[task]
        if metric not in REPLICATE:
            for cell_id, _ in cells:
                reps.notes[(cell_id, eval_set)] = f"no vectorised bootstrap for {metric}"
            continue
        n_items = len(_universe(cells))
        rng = np.random.default_rng([seed, stable_seed(*PANEL, task, eval_set)])
        counts = resample_counts(n_items, n_resamples, rng)
        _score_panel(metric, cells, counts, reps, eval_set)
        log.info("bootstrap %s/%s: %d cells, %d items, %d resamples", task, eval_set,
                 len(cells), n_items, n_resamples)
    return reps
