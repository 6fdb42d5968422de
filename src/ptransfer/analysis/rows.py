"""Result rows: the long-format schema every cell writes and ``collect`` merges.

One row holds one number: the value of one metric of one layer's probe on one evaluation
set. Plots and summaries read only the merged table (``analysis.collect``), never a model or
a dataset.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd

ROWS_FILE = "rows.csv"
RESULTS_FILE = "results.csv"

# Column -> meaning (README's rows table documents each; tests/test_readme_schemas.py checks
# that the two name the same columns).
COLUMNS: dict[str, str] = {
    "model": "model name as its package names it (esm2_t6_8M_UR50D, carp_600k, onehot)",
    "family": "esm1 | esm1b | esm2 | carp | hf_esm2 | esmc | prot_bert | prot_t5 | ankh | antiberty | onehot",
    "n_params": "parameter count of the encoder (0 for onehot)",
    "checkpoint": "pretraining checkpoint name (final, or an intermediate one)",
    "checkpoint_step": "pretraining step of that checkpoint (empty when unknown)",
    "checkpoint_fraction": "fraction of pretraining done at that checkpoint: 1 for final; "
                           "model.checkpoints.<name>.fraction, else step / final step "
                           "(empty when unknown)",
    "checkpoint_order": "position of the checkpoint in its model's pretraining order "
                        "(model.checkpoints in the order listed, final last)",
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
    "length_policy": "sequences over the model's limit: window | truncate",
    "pooled_dtype": "per-protein store dtype: float32 | float16",
    "data_fingerprint": "SHA-256 prefix of the task's loaded content (sequences, targets, splits)",
    "head": "probe: ridge | logistic | linear | streaming; mlp for fine-tune cells",
    "head_config": "SHA-256 prefix of the probe's own configuration (its grid, learning rate, "
                   "...; a fine-tune cell's: its tune settings): cells are compared only when "
                   "it is equal",
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


# Columns only some cells write, with the value their absence means. ``selection``: how the
# best layer and hyper-parameters were chosen; the cross-validated cell a cell writes beside
# it (``selection.method=cv``) says ``cv``, every other row is ``val`` (its bytes unchanged).
# ``tune``: frozen (probes on the frozen model's features), or lora | full, written by
# fine-tune cells (the model fine-tuned with an MLP head on its last layer).
OPTIONAL_COLUMNS: dict[str, str] = {"selection": "val", "tune": "frozen"}

# Columns added after the first tables were written, with the value an older table means.
ADDED_COLUMNS: dict[str, object] = {
    "checkpoint_fraction": float("nan"), "checkpoint_order": float("nan"),
    "length_policy": "", "pooled_dtype": "", "head_config": "",
}


def with_added_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """An older table with the columns added since (``ADDED_COLUMNS``) filled in."""
    missing = {c: v for c, v in ADDED_COLUMNS.items() if c not in frame.columns}
    return frame.assign(**missing) if missing else frame


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
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # private
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def read_checked(path: str | Path, read, columns, what: str) -> pd.DataFrame:
    """``read(path)``, checking the file exists and carries ``columns``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        frame = read(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file, not a ptransfer {what}") from None
    except Exception as err:  # noqa: BLE001 - any parse error (truncated, not CSV/Parquet)
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: cannot be read as a ptransfer {what} ({detail})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a ptransfer {what}, missing columns {missing}")
    return frame


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a rows or results CSV, checking it carries the schema's columns."""
    required = [c for c in COLUMNS if c not in ADDED_COLUMNS]
    frame = read_checked(path, pd.read_csv, required, "results table")
    return with_added_columns(frame)[[*COLUMNS, *(c for c in frame if c not in COLUMNS)]]
