"""Selection stability: how many validation proteins chose the layer and hyper-parameters.

The best layer and every hyper-parameter are chosen on the validation set; on a small one
the choice is noise. GB1 two_vs_rest validates on 43 proteins: with AntiBERTy it picks
layer 6 with alpha 0.03, 0.221 on test, while every other layer scores 0.38-0.54 there.
Below ``MIN_VALIDATION_ITEMS`` proteins the summary's ``warning`` column and the taxonomy's
evidence say so (rules: docs/statistics.md, "Selection"). Cells whose rows say they were
selected by k-fold cross-validation over train and validation (``selection`` = ``cv``:
``selection.method=cv``) are not warned about; where they sit beside validation-selected
cells, the decisions use them (``decisions.choose_pretrained``) and the warning says so.

The count is the number of distinct validation proteins in a cell's predictions (per
residue too: residues of one protein are not independent draws); without predictions, a
per-protein task's validation ``n_eval``. A task's size is the smallest over its cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ptransfer.analysis.bootstrap import Replicates
from ptransfer.analysis.panels import SELECTIONS

MIN_VALIDATION_ITEMS = 100
CV_SELECTION = SELECTIONS[1]


def _validation_selected(val_rows: pd.DataFrame) -> pd.DataFrame:
    return val_rows[val_rows["selection"] != CV_SELECTION] if len(val_rows) else val_rows


def cv_tasks(val_rows: pd.DataFrame) -> set[str]:
    """Tasks some of whose cells were selected by cross-validation."""
    return set(val_rows.loc[val_rows["selection"] == CV_SELECTION, "task"]) if len(
        val_rows) else set()


def decision_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` without the validation-selected rows of tasks that also have cross-validated
    ones (``selection.method=auto``): what the decisions use, so figures draw it alone
    rather than two selections of one arm side by side (or one-hot pooled over them)."""
    if not len(rows):
        return rows
    cv = cv_tasks(rows)
    return rows[~(rows["task"].isin(cv) & (rows["selection"] != CV_SELECTION))]


def validation_sizes(val_rows: pd.DataFrame, val_reps: Replicates) -> dict[str, int]:
    """task -> the smallest number of validation proteins any validation-selected cell of
    it chose on (tasks whose size is unknown are absent)."""
    sizes: dict[str, int] = {}
    for (task, cell_id), cell in _validation_selected(val_rows).groupby(["task", "cell_id"],
                                                                          sort=False):
        items = val_reps.items.get((str(cell_id), "val"))
        if items is not None:
            n = len(items)
        elif (cell["level"].astype(str) == "protein").all() and "n_eval" in cell:
            n = int(pd.to_numeric(cell["n_eval"], errors="coerce").min())
        else:
            continue
        if np.isfinite(n):
            sizes[task] = min(sizes.get(task, n), int(n))
    return sizes


def selection_warnings(sizes: dict[str, int], cv: set[str] = frozenset(),
                       minimum: int = MIN_VALIDATION_ITEMS) -> dict[str, str]:
    """task -> the warning of a validation set below ``minimum`` proteins; ``cv``: tasks
    with cross-validated cells beside (the decisions use those)."""
    remedy = {True: "the decisions use the cells selected by cross-validation (selection cv)",
              False: "read the last layer beside the best, or select by cross-validation "
                     "(selection.method=cv)"}
    return {task: (f"selection on a small validation set: {task} validates on {n} proteins "
                   f"(< {minimum}), so the best layer and hyper-parameters chosen on it are "
                   f"unstable; {remedy[task in cv]}")
            for task, n in sizes.items() if n < minimum}
