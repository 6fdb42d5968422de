"""Benchmark: the test/train substring-overlap check (``tasks.overlap``) on the real tasks.

For ss3 (FLIP NetSurfP-2.0 train/val vs CB513, TS115, CASP12 and FLIP's new364) and the
paper's three GB1 splits (56-residue domain): per test set, how many test sequences lie
inside a train/val sequence, contain one, either (the count ``task.overlap=drop`` removes),
and the seconds ``overlap_mask`` takes. ``--brute`` also runs the all-pairs ``in`` loop on
every test set and checks that it gives the same sequences (and prints its time).

    python scripts/bench_overlap.py --root ../shared/data --brute
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ptransfer.tasks.flip import load_flip_task
from ptransfer.tasks.overlap import contained_in, containing, overlap_mask
from ptransfer.tasks.ss3 import load_ss3_task


def brute(queries: list[str], references: list[str]) -> np.ndarray:
    return np.array([any(q in r or r in q for r in references) for q in queries])


def report(task, check_brute: bool) -> None:
    fit = task.splits["train"].sequences + task.splits["val"].sequences
    for name in task.test_sets:
        test = task.splits[name].sequences
        started = time.perf_counter()
        either = overlap_mask(test, fit)
        seconds = time.perf_counter() - started
        line = (f"{task.name:>14} {name:>8}: {len(test):5d} test vs {len(fit):5d} train/val; "
                f"inside {int(contained_in(test, fit).sum())}, containing "
                f"{int(containing(test, fit).sum())}, either {int(either.sum())}; "
                f"{seconds:.3f} s")
        if check_brute:
            started = time.perf_counter()
            reference = brute(test, fit)
            line += f" (all pairs: {time.perf_counter() - started:.1f} s"
            line += ", same)" if (reference == either).all() else ", DIFFERENT)"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data")
    parser.add_argument("--brute", action="store_true", help="also run the all-pairs loop")
    args = parser.parse_args()
    ss3 = load_ss3_task(args.root, test_sets=["cb513", "ts115", "casp12", "new364"])
    report(ss3, args.brute)
    for split in ("two_vs_rest", "low_vs_high", "sampled"):
        task = load_flip_task(f"gb1_{split}", "gb1", split, "regression", args.root,
                              window=[0, 56])
        report(task, args.brute)


if __name__ == "__main__":
    main()
