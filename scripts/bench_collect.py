"""Benchmark: ``collect``'s statistics (intervals, paired comparisons, taxonomy) on a
simulated results table the size of ``+experiment=paper_ablations``.

232 cells = 8 tasks x (4 PLMs x (pretrained + 3 random_init + 3 stat_transfer seeds) + one-hot),
every layer (ESM-1 35, ESM-1b 34, ESM-2 34, CARP-640M 57 layer outputs, one-hot 1), each cell
with rows.csv and predictions.parquet on its test sets at the tasks' real test-set sizes.
Prints the time to write the simulated cells (not part of collect), then the time of
``analysis.collect.collect`` (1,000 resamples), what ``ptransfer collect`` runs.

    python scripts/bench_collect.py [--out /tmp/bench_collect] [--resamples 1000] [--keep]
        [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ptransfer.analysis.cell_files import STATUS_FILE, file_record
from ptransfer.analysis.collect import collect, merge_cells
from ptransfer.analysis.predictions import PREDICTIONS_FILE, item_id, write_predictions
from ptransfer.analysis.rows import COLUMNS, ROWS_FILE, make_frame, write_rows

# Test-set sizes: GB1 from the FLIP CSVs in ../shared/data; AAV and Meltome from the FLIP
# paper's split table; SCL balanced assumed 490 (DeepLoc setHARD); ss3 from the NetSurfP test
# files (proteins; scored residues ~84k in CB513 as the issue reports, 29,704 in TS115,
# ~5k in CASP12).
PROTEIN_TASKS = {"gb1_two_vs_rest": 8_309, "gb1_low_vs_high": 3_644, "gb1_sampled": 1_745,
                 "aav_one_vs_many": 81_413, "aav_two_vs_many": 50_776, "meltome_mixed": 3_134}
SCL = ("scl_balanced", 490, 10)
SS3 = {"cb513": (511, 84_000), "ts115": (115, 29_704), "casp12": (21, 5_000)}
MODELS = {"esm1_t34_670M_UR50S": ("esm1", 670e6, 35), "esm1b_t33_650M_UR50S": ("esm1b", 650e6, 34),
          "esm2_t33_650M_UR50D": ("esm2", 650e6, 34), "carp_640M": ("carp", 640e6, 57)}
ARMS = [("pretrained", 42)] + [(a, s) for a in ("random_init", "stat_transfer")
                               for s in (42, 0, 12345)]


def _items(ids: list[str]) -> pd.Categorical:
    return pd.Categorical.from_codes(np.arange(len(ids)), ids)


def _eval_sets(task: str, rng) -> dict:
    """eval_set -> (items, positions, y_true) of one simulated task."""
    if task in PROTEIN_TASKS:
        n = PROTEIN_TASKS[task]
        return {"test": (_items([item_id(f"{task}{i}") for i in range(n)]), np.full(n, -1),
                         rng.normal(size=n))}
    if task == SCL[0]:
        return {"test": (_items([item_id(f"scl{i}") for i in range(SCL[1])]),
                         np.full(SCL[1], -1), rng.integers(0, SCL[2], SCL[1]))}
    out = {}
    for name, (n_proteins, n_residues) in SS3.items():
        lengths = rng.multinomial(n_residues - 20 * n_proteins, np.full(n_proteins,
                                                                         1 / n_proteins)) + 20
        names = [item_id(f"{name}{i}") for i in range(n_proteins)]
        items = pd.Categorical.from_codes(np.repeat(np.arange(n_proteins), lengths), names)
        out[name] = (items, np.concatenate([np.arange(k) for k in lengths]),
                     rng.integers(0, 3, lengths.sum()))
    return out


def _predict(y_true, positions, quality, rng, n_classes):
    if positions[0] < 0 and n_classes == 0:
        return y_true * quality + rng.normal(size=len(y_true))
    k = max(n_classes, 3)
    return np.where(rng.random(len(y_true)) < min(quality, 0.95), y_true,
                    rng.integers(0, k, len(y_true)))


def _block(eval_set: str, layer: int, items: pd.Categorical, positions, y_true, y_pred,
           classification: bool) -> pd.DataFrame:
    """One block in the stored schema (``predictions_frame``'s dtypes), built from an
    already-encoded item column: encoding 80k strings per layer would dominate the setup."""
    n = len(y_true)
    dtype = np.int16 if classification else np.float32
    return pd.DataFrame({
        "eval_set": pd.Categorical.from_codes(np.zeros(n, np.int8), [eval_set]),
        "layer": np.full(n, layer, dtype=np.int16), "item": items,
        "position": positions.astype(np.int32), "y_true": y_true.astype(dtype),
        "y_pred": y_pred.astype(dtype)})


def _cell(root: Path, task: str, sets: dict, model: str, info, ablation: str, seed: int, rng):
    family, n_params, n_layers = info
    classification = task == SCL[0] or task == "ss3"
    metric = "accuracy" if classification else "spearman"
    cell_id = f"{task}-{model}-{ablation}-{seed}"
    base = {"pretrained": 0.5, "random_init": 0.3, "stat_transfer": 0.35}[ablation]
    blocks, rows = [], []
    best = int(rng.integers(0, n_layers))
    for layer in range(n_layers):
        quality = base + 0.3 * layer / max(n_layers - 1, 1) if family != "onehot" else 0.3
        for eval_set, (items, positions, y_true) in sets.items():
            y_pred = _predict(y_true, positions, quality, rng,
                              SCL[2] if task == SCL[0] else (3 if task == "ss3" else 0))
            blocks.append(_block(eval_set, layer, items, positions, y_true, y_pred,
                                 classification))
            row = dict.fromkeys(COLUMNS)
            row.update(model=model, family=family, n_params=n_params, checkpoint="final",
                       checkpoint_step=np.nan, ablation=ablation, ablation_scope="full",
                       seed=seed, task=task, dataset="sim", level="residue" if task == "ss3"
                       else "protein", layer=layer, n_layers=n_layers,
                       rel_depth=layer / max(n_layers - 1, 1), revision="", precision="fp32",
                       data_fingerprint="sim", head="ridge", hparams=json.dumps({}),
                       eval_set=eval_set, metric=metric, value=quality, n_train=0,
                       n_eval=len(items), best_layer=layer == best, main_metric=True,
                       cell_id=cell_id, config_hash="sim", ptransfer_version="bench")
            rows.append(row)
    cell_dir = root / "cells" / cell_id
    write_rows(make_frame(rows), cell_dir / ROWS_FILE)
    write_predictions(blocks, cell_dir / PREDICTIONS_FILE)
    files = {ROWS_FILE: file_record(cell_dir / ROWS_FILE, len(rows)),
             PREDICTIONS_FILE: file_record(cell_dir / PREDICTIONS_FILE,
                                           sum(len(b) for b in blocks))}
    (cell_dir / STATUS_FILE).write_text(json.dumps({"state": "done", "files": files}))


def simulate(root: Path) -> int:
    rng = np.random.default_rng(0)
    n = 0
    for task in [*PROTEIN_TASKS, SCL[0], "ss3"]:
        sets = _eval_sets(task, rng)
        for model, info in MODELS.items():
            for ablation, seed in ARMS:
                _cell(root, task, sets, model, info, ablation, seed, rng)
                n += 1
        _cell(root, task, sets, "onehot", ("onehot", 0, 1), "pretrained", 42, rng)
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench_collect")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the simulated cells")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse cells a previous --keep run left in --out")
    args = parser.parse_args()
    root = Path(args.out)
    if not (args.reuse and (root / "cells").is_dir()):
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        n_cells = simulate(root)
        print(f"simulated {n_cells} cells in {time.perf_counter() - started:.1f} s "
              "(not part of collect)")
    size = sum(p.stat().st_size for p in root.rglob(PREDICTIONS_FILE))
    print(f"{size / 2**20:.0f} MiB of predictions.parquet")
    started = time.perf_counter()
    merged = merge_cells(root)[0]  # verify every cell's files and read its rows
    read = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    done = collect(root, n_resamples=args.resamples)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    taxonomy = pd.read_csv(root / "taxonomy.csv")
    n_intervals = len(pd.read_csv(root / "intervals.csv"))
    n_comparisons = len(pd.read_csv(root / "comparisons.csv"))
    print(f"collect: {len(merged):,} rows from {len(done.cells)} cells; verifying + merging "
          f"alone {read:.1f} s; whole collect (verify, merge, intervals + comparisons + "
          f"taxonomy with {args.resamples} resamples, atomic publish) {total:.1f} s wall, "
          f"{cpu:.1f} s CPU; {n_intervals} intervals, {n_comparisons} comparisons, "
          f"{len(taxonomy)} taxonomy rows; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(taxonomy["class"].value_counts().to_string())
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
