"""Result rows: the long-format schema every cell writes and ``collect`` merges.

One row holds one number: the value of one metric of one layer's probe on one evaluation
set. Plots and summaries read only the merged table, never a model or a dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

ROWS_FILE = "rows.csv"
RESULTS_FILE = "results.csv"

# Column -> meaning. The README's schema table is generated from the same words.
COLUMNS: dict[str, str] = {
    "model": "model name as its package names it (esm2_t6_8M_UR50D, carp_600k, onehot)",
    "family": "esm1 | esm1b | esm2 | carp | hf_esm2 | esmc | prot_bert | prot_t5 | ankh | antiberty | onehot",
    "n_params": "parameter count of the encoder (0 for onehot)",
    "checkpoint": "pretraining checkpoint name (final, or an intermediate one)",
    "checkpoint_step": "pretraining step of that checkpoint (empty when unknown)",
    "ablation": "pretrained | random_init | stat_transfer (onehot rows: pretrained)",
    "ablation_scope": "full (every tensor) | reference (what the paper's code changed); see README",
    "seed": "seed of the cell: ablation, probe initialisation, data order",
    "task": "task name (gb1_two_vs_rest, ss3, ...)",
    "dataset": "dataset and split the task reads (flip_gb1/two_vs_rest, ...)",
    "level": "protein | residue",
    "layer": "layer index, 0 = token embedding output ... n_layers - 1 = last block",
    "n_layers": "number of layer outputs of the encoder (blocks + 1)",
    "rel_depth": "layer / (n_layers - 1): 0 at the embedding, 1 at the last block",
    "revision": "hub revision of the weights (transformers models; empty otherwise)",
    "precision": "extraction precision: fp32 | bf16 | fp16",
    "data_fingerprint": "SHA-256 prefix of the task's loaded content (sequences, targets, splits)",
    "head": "probe: ridge | logistic | linear | streaming",
    "hparams": "hyper-parameters chosen on validation, JSON ({\"alpha\": 10.0})",
    "eval_set": "val, or a test set name (test, cb513, ts115, casp12)",
    "metric": "spearman | pearson | mse | ndcg | accuracy | macro_f1 | roc_auc",
    "value": "metric value, unrounded",
    "n_train": "training examples the probe saw (proteins, or scored residues)",
    "n_eval": "examples scored on eval_set (proteins, or scored residues)",
    "n_test_overlap": "test sequences of eval_set equal to, inside or containing a train/val "
                      "sequence (0 for val; 0 after task.overlap=drop)",
    "best_layer": "True on every row of the layer chosen on validation by the task's main metric",
    "main_metric": "True when metric is the task's main metric (used for selection)",
    "cell_id": "readable cell name plus the hash of its effective config",
    "config_hash": "SHA-256 prefix of the cell's effective config",
    "ptransfer_version": "package version that wrote the row",
}


def make_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as a DataFrame in schema order; a missing or extra column is a bug, so it raises."""
    frame = pd.DataFrame(rows)
    missing = [c for c in COLUMNS if c not in frame.columns]
    extra = [c for c in frame.columns if c not in COLUMNS]
    if missing or extra:
        raise ValueError(f"result rows do not match the schema: missing {missing}, extra {extra}")
    return frame[list(COLUMNS)]


def write_rows(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically: a reader sees the old file or the complete new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def read_checked(path: str | Path, read, columns, what: str) -> pd.DataFrame:
    """``read(path)``, checking the file exists and carries ``columns``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    frame = read(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a ptransfer {what}, missing columns {missing}")
    return frame


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a rows or results CSV, checking it carries the schema's columns."""
    return read_checked(path, pd.read_csv, COLUMNS, "results table")


def collect(root: str | Path) -> pd.DataFrame:
    """Merge every ``rows.csv`` under ``root`` into ``root/results.csv`` and return it."""
    root = Path(root)
    files = sorted(p for p in root.rglob(ROWS_FILE) if p.is_file())
    if not files:
        raise FileNotFoundError(f"no {ROWS_FILE} under {root}: run `ptransfer run` first")
    frames = [read_results(p) for p in files]
    merged = pd.concat(frames, ignore_index=True)
    write_rows(merged, root / RESULTS_FILE)
    log.info("collected %d rows from %d runs into %s", len(merged), len(files), root / RESULTS_FILE)
    return merged
