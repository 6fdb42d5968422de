"""Benchmark: peak memory of the one-hot baseline's per-protein probe on long proteins.

A synthetic user CSV classification task: ``--n`` proteins, lengths log-normal around
``--median`` residues with a long tail (the longest is ``--longest``), three classes that
depend on composition, splits 80/10/10. Per-protein one-hot is zero-padded to the longest
sequence and flattened (20 x longest columns), as the cell does.

Each phase runs in one child process (``--phase`` is internal), which reports from
``/proc/self/status``:

- ``features``: RSS held by the feature matrices of every split (after ``memory_features``),
  and the high-water mark while they were built;
- ``probe``: the high-water mark while ``fit_layer`` fits and scores the LogisticProbe,
  measured from a reset (``/proc/self/clear_refs``) once the features are held.

Peak memory of the probe is compared with the bytes of its training features (the ``train``
split's float32 matrix, N_train x 20 L_max x 4 B) and with all splits' features.

    python scripts/bench_onehot_memory.py                    # 2,000 proteins, longest 5,000
    python scripts/bench_onehot_memory.py --n 600 --longest 2000 --cs 1e-2,1  # quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ALPHABET = "ACDEFGHIKLMNPQRSTVWY"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="proteins (default 2000)")
    parser.add_argument("--median", type=int, default=421, help="median length (default 421)")
    parser.add_argument("--longest", type=int, default=5000, help="longest protein (default 5000)")
    parser.add_argument("--cs", default=None,
                        help="comma-separated C grid (default: the probe's DEFAULT_CS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--csv", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def write_task(path: Path, n: int, median: int, longest: int, seed: int) -> dict:
    """Write the CSV task; returns its lengths summary."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median), 0.55, n).astype(int), 30, longest)
    lengths[rng.choice(n, max(1, n // 200), replace=False)] = rng.integers(
        longest // 2, longest + 1, max(1, n // 200))  # the long tail
    lengths[0] = longest
    labels = rng.integers(0, 3, n)
    # Each class prefers a different third of the alphabet, weakly.
    prefs = np.full((3, 20), 1.0)
    for k in range(3):
        prefs[k, k * 6:(k + 1) * 6] = 1.6
    prefs /= prefs.sum(axis=1, keepdims=True)
    splits = rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sequence", "target", "set"])
        for length, label, split in zip(lengths, labels, splits):
            residues = rng.choice(list(ALPHABET), int(length), p=prefs[label])
            writer.writerow(["".join(residues), f"class{label}", split])
    return {"n": n, "median_len": int(np.median(lengths)), "longest": int(lengths.max())}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    # "5" resets VmHWM to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def child(args: argparse.Namespace) -> None:
    """Load the task, build one-hot features, fit the probe; print the figures as JSON."""

    from ptransfer.embed.features import memory_features
    from ptransfer.embed.settings import ExtractSettings
    from ptransfer.encoders.onehot import OneHotEncoder
    from ptransfer.heads import LogisticProbe
    from ptransfer.heads.fit_layers import fit_layer
    from ptransfer.tasks.user_csv import load_csv_task

    task = load_csv_task(args.csv, name="long", kind="classification")
    encoder = OneHotEncoder().load(None, ablation="pretrained", seed=0)
    extract = ExtractSettings(progress=False)
    _reset_peak()
    base = _status_kib("VmRSS")
    started = time.time()
    feats = memory_features(encoder, task, extract)
    features_seconds = time.time() - started
    held = _status_kib("VmRSS") - base
    build_peak = _status_kib("VmHWM") - base
    train = feats.get(0, "train")
    all_bytes = sum(feats.get(0, s).nbytes for s in task.splits)
    cs = tuple(float(c) for c in args.cs.split(",")) if args.cs else None
    probe = LogisticProbe(n_classes=task.n_classes, **({"Cs": cs} if cs else {}))
    _reset_peak()
    before_probe = _status_kib("VmRSS")
    started = time.time()
    fit = fit_layer(probe, 0, task, lambda split: feats.get(0, split))
    probe_seconds = time.time() - started
    probe_peak = _status_kib("VmHWM") - before_probe
    print(json.dumps({
        "width": int(train.shape[1]), "n_train": int(train.shape[0]),
        "train_bytes": int(train.nbytes), "all_bytes": int(all_bytes),
        "held_kib": held, "build_peak_kib": build_peak, "probe_extra_kib": probe_peak,
        "probe_peak_kib": probe_peak + before_probe - base,
        "features_s": round(features_seconds, 1), "probe_s": round(probe_seconds, 1),
        "C": fit.hparams["C"], "val_accuracy": fit.scores["val"]["accuracy"],
        "test_accuracy": fit.scores["test"]["accuracy"],
    }))


def main() -> None:
    args = parse_args()
    if args.phase == "child":
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long_proteins.csv"
        summary = write_task(path, args.n, args.median, args.longest, args.seed)
        command = [sys.executable, __file__, "--phase", "child", "--csv", str(path)]
        if args.cs:
            command += ["--cs", args.cs]
        out = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        if out.returncode:
            sys.exit(out.stderr)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    gib = 1024**3
    kib = 1024
    train, every = result["train_bytes"], result["all_bytes"]
    print(f"task: {summary['n']} proteins, median {summary['median_len']} residues, longest "
          f"{summary['longest']}; one-hot width 20 x {summary['longest']} = {result['width']:,} "
          f"columns; train {result['n_train']} proteins")
    print(f"features (float32): train {train / gib:.2f} GiB, all splits {every / gib:.2f} GiB; "
          f"held RSS {result['held_kib'] * kib / gib:.2f} GiB, peak while building "
          f"{result['build_peak_kib'] * kib / gib:.2f} GiB ({result['features_s']} s)")
    peak = result["probe_peak_kib"] * kib
    print(f"probe: peak {peak / gib:.2f} GiB above the start of the cell "
          f"({result['probe_extra_kib'] * kib / gib:.2f} GiB above the held features), "
          f"{result['probe_s']} s; peak / train features = {peak / train:.2f}x, "
          f"peak / all features = {peak / every:.2f}x")
    print(f"chosen C {result['C']}, val accuracy {result['val_accuracy']:.4f}, "
          f"test accuracy {result['test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
