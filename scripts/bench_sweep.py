"""Two-phase sweeps on this CPU with 1 and 2 workers: wall time, scaling, model-free phase 2.

    python scripts/bench_sweep.py --data ../shared/data [--workers 1 2] [--shard-tokens 150000]

Runs, for each worker count, in a fresh results folder and in this order:

- the ``gb1`` preset (one-hot, random-init ESM-2 8M and CARP-600k on the three GB1 splits:
  9 cells; two stores, each cut into shards of ``--shard-tokens`` tokens);
- ss3 subsampled (``subsample={train: 300, val: 60, cb513: 60, ts115: 30, casp12: 20}``),
  one-hot and random-init ESM-2 8M with ``head=linear`` (the per-residue store is
  extracted in phase 1 and read in phase 2) and with the default streaming probe (it embeds
  as it fits: a phase-1 job).

with ``hydra/launcher=joblib hydra.launcher.n_jobs=W`` (both phases), one torch thread per
job. Reports wall time per sweep, the phase-1 and phase-2 spans (from the jobs' statuses),
scaling efficiency T(1) / (W x T(W)), and how many phase-2 cells loaded no model (their
``status.json`` ``model_loaded``). No GPU is used (none is lent to this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SS3_SUBSAMPLE = "subsample={train: 300, val: 60, cb513: 60, ts115: 30, casp12: 20}"


def sweeps(data: str, shard_tokens: int) -> dict[str, list[str]]:
    common = [f"data.root={data}", "extract.progress=false", f"extract.shard_tokens={shard_tokens}"]
    ss3 = ["task=ss3", "model=onehot,esm2_t6_8M_UR50D", "ablation=pretrained,random_init",
           "grid.skip_pretrained_plm=true", SS3_SUBSAMPLE, *common]
    return {"gb1": ["+experiment=gb1", *common],
            "ss3 linear": [*ss3, "head=linear"],
            "ss3 streaming": ss3}


def run_sweep(args: list[str], workers: int, results: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "ptransfer.cli", "run", "-m", *args,
               f"results_dir={results}", "hydra/launcher=joblib",
               f"hydra.launcher.n_jobs={workers}"]
    started = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return {"wall_s": wall, **phase_spans(results)}


def phase_spans(results: Path) -> dict:
    """Phase-1 span and phase-2 model loads, from the files the sweep wrote."""
    import pandas as pd

    jobs = [json.loads(p.read_text()) for p in results.rglob("job_status.json")]
    shards = [j for j in jobs if j.get("phase") == "extract" and "ended" in j]
    phase2 = loaded = streaming = 0
    for status_file in results.rglob("cells/*/status.json"):
        status = json.loads(status_file.read_text())
        head = pd.read_csv(status_file.with_name("rows.csv"), nrows=1)["head"].iloc[0]
        if head == "streaming":  # embeds as it fits: a phase-1 job
            streaming += 1
            continue
        phase2 += 1
        loaded += bool(status.get("model_loaded"))
    span1 = (max(j["ended"] for j in shards) - min(j["started"] for j in shards)) if shards else 0.0
    return {"shard_jobs": len(shards), "phase1_s": span1, "phase2_cells": phase2,
            "phase2_loading_a_model": loaded, "streaming_cells": streaming}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shard-tokens", type=int, default=150_000)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    table: dict[str, dict[int, dict]] = {}
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            for name, sweep in sweeps(args.data, args.shard_tokens).items():
                out = run_sweep(sweep, workers, Path(tmp) / name.replace(" ", "_"))
                table.setdefault(name, {})[workers] = out
                print(f"{name}, {workers} worker(s): {json.dumps(out)}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    base = min(args.workers)
    print("\n| sweep | workers | wall (s) | phase-1 span (s) | shard jobs | phase-2 cells "
          "without a model | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in table.items():
        for workers, out in runs.items():
            efficiency = runs[base]["wall_s"] * base / (workers * out["wall_s"])
            print(f"| {name} | {workers} | {out['wall_s']:.0f} | {out['phase1_s']:.0f} | "
                  f"{out['shard_jobs']} | {out['phase2_cells'] - out['phase2_loading_a_model']}"
                  f" of {out['phase2_cells']} | {efficiency:.2f} |")
    totals = {w: sum(table[n][w]["wall_s"] for n in table) for w in args.workers}
    for workers, total in totals.items():
        print(f"all sweeps, {workers} worker(s): {total:.0f} s; efficiency "
              f"{totals[base] * base / (workers * total):.2f}")


if __name__ == "__main__":
    main()
