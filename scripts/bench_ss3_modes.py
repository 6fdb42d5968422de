"""Peak memory and disk of one ss3 cell in both per-residue probe modes.

Runs ``ptransfer run task=ss3 model=... ablation=random_init head=linear|streaming`` as a
subprocess (no weights needed), records the child's peak RSS (``ru_maxrss``), wall time,
the size of the embedding stores it left on disk and its per-layer test accuracy, and
prints one line per mode plus a per-residue extrapolation to the full task.

    python scripts/bench_ss3_modes.py --data-root ../shared/data \
        --model esm2_t12_35M_UR50D --subsample "{train: 150, val: 50, cb513: 50, ts115: 20, casp12: 10}"
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

FULL_SS3_SCORED = 2_699_470  # ss3 scored residues: train + val + cb513 + ts115 + casp12 (one-hot run)


PEAK_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_mode(mode: str, args, work: Path) -> dict:
    results = work / mode
    cmd = [sys.executable, "-m", "ptransfer.cli", "run", "task=ss3", f"model={args.model}",
           "ablation=random_init", f"head={mode}", f"subsample={args.subsample}",
           f"data.root={args.data_root}", f"results_dir={results}", "extract.progress=false"]
    env = {**os.environ, "PTRANSFER_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    # A fresh wrapper process per mode: RUSAGE_CHILDREN's peak is then this mode's alone.
    wrapper = [sys.executable, "-c", PEAK_WRAPPER, *cmd]
    start = time.perf_counter()
    proc = subprocess.run(wrapper, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak_kib = int(proc.stdout.strip().splitlines()[-1])
    rows = pd.concat(pd.read_csv(p) for p in results.rglob("rows.csv"))
    acc = rows[(rows.metric == "accuracy") & (rows.eval_set == "cb513")].set_index("layer").value
    residues = int(rows[rows.eval_set != "val"].groupby("eval_set").n_eval.first().sum()
                   + rows[rows.eval_set == "val"].n_eval.iloc[0] + rows.n_train.iloc[0])
    return {"mode": mode, "seconds": seconds, "peak_rss_gib": peak_kib / 2**20,
            "disk_bytes": dir_bytes(results / "embeddings"),
            "scored_residues": residues, "cb513_acc": acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--model", default="esm2_t12_35M_UR50D")
    parser.add_argument("--subsample", default="{train: 150, val: 50, cb513: 50, ts115: 20, casp12: 10}")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = [run_mode(mode, args, Path(tmp)) for mode in ("streaming", "linear")]
    for r in out:
        per_residue = r["disk_bytes"] / max(r["scored_residues"], 1)
        print(f"{r['mode']:>9}: {r['seconds']:7.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB"
              ", "
              f"store {r['disk_bytes'] / 2**20:.1f} MiB for {r['scored_residues']} scored residues"
              f" -> ~{per_residue * FULL_SS3_SCORED / 2**30:.1f} GiB for full ss3")
    both = pd.DataFrame({r["mode"]: r["cb513_acc"] for r in out})
    print("\ncb513 accuracy per layer:\n" + both.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\nbest layer on cb513: streaming {both.streaming.idxmax()}, linear {both.linear.idxmax()};"
          f" Spearman of the two layer rankings: {both.corr(method='spearman').iloc[0, 1]:.2f}")


if __name__ == "__main__":
    main()
