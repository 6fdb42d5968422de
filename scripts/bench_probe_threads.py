"""What fitting a probe on one thread costs (``heads.backend.one_thread``, issue 28 item 8).

    python scripts/bench_probe_threads.py [--threads 2] [--repeats 3]

``fit_layer`` runs every probe on one CPU thread so that its numbers do not depend on the
process's thread count. Timed here: one layer's fit and scoring (``fit_layer``) on random
float32 features of real task shapes, pinned (as the cell runs it) against the same call on
``--threads`` BLAS/torch threads (what it did before). Shapes: GB1 two_vs_rest with ESM-2 8M
(381 / 43 / 8,309 proteins x 320: ridge, primal), GB1 low_vs_high (4,580 / 509 / 3,644 x
320), GB1 two_vs_rest flattened one-hot (381 x 1,120: ridge, dual), ESM-2 650M width
(4,580 x 1,280), and three-class logistic regression (2,000 / 500 / 2,000 x 320). Best of
``--repeats``; the pinned fit's values are checked equal under both thread counts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ptransfer.heads import LogisticProbe, RidgeProbe
from ptransfer.heads.fit_layers import _fit_layer, fit_layer
from ptransfer.tasks.base import Split, Task

SHAPES = [  # name, probe, (train, val, test), width
    ("gb1 two_vs_rest, esm2 8M", "ridge", (381, 43, 8309), 320),
    ("gb1 low_vs_high, esm2 8M", "ridge", (4580, 509, 3644), 320),
    ("gb1 two_vs_rest, one-hot", "ridge", (381, 43, 8309), 1120),
    ("gb1 low_vs_high, 1280 dims", "ridge", (4580, 509, 3644), 1280),
    ("3 classes, logistic", "logistic", (2000, 500, 2000), 320),
]


def make_task(kind: str, sizes: tuple[int, int, int], rng: np.random.Generator) -> Task:
    def split(n: int) -> Split:
        y = rng.normal(size=n) if kind == "regression" else rng.integers(0, 3, n)
        return Split([f"M{i}" for i in range(n)], y)

    names = ("train", "val", "test")
    return Task("bench", "protein", kind, {s: split(n) for s, n in zip(names, sizes)},
                dataset="bench", metric="spearman" if kind == "regression" else "accuracy",
                classes=None if kind == "regression" else ["a", "b", "c"])


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_shape(kind: str, sizes: tuple[int, int, int], width: int, threads: int,
               repeats: int, rng: np.random.Generator) -> tuple[float, float]:
    """(pinned seconds, seconds on ``threads`` threads) of one layer's fit and scoring."""
    task = make_task("regression" if kind == "ridge" else "classification", sizes, rng)
    feats = {s: rng.normal(size=(len(task.splits[s]), width)).astype(np.float32)
             for s in task.splits}

    def run(fit):
        probe = RidgeProbe() if kind == "ridge" else LogisticProbe(n_classes=3)
        return fit(probe, 0, task, feats.__getitem__)

    with threadpool_limits(threads):
        torch.set_num_threads(threads)
        pinned = best_of(lambda: run(fit_layer), repeats)
        free = best_of(lambda: run(_fit_layer), repeats)
        values = run(fit_layer).scores
    with threadpool_limits(1):
        assert run(fit_layer).scores == values
    return pinned, free


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'shape':<28} {'pinned s':>9} {f'{args.threads} threads s':>12} {'ratio':>6}")
    for name, kind, sizes, width in SHAPES:
        pinned, free = time_shape(kind, sizes, width, args.threads, args.repeats, rng)
        print(f"{name:<28} {pinned:>9.3f} {free:>12.3f} {pinned / free:>6.2f}")


if __name__ == "__main__":
    main()
