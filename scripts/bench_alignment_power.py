"""How often alignment finds an early plateau, by test-set size and noise shared between
checkpoints (issue 24, item 1): the numbers behind docs/statistics.md, "Alignment".

    python scripts/bench_alignment_power.py [--runs 40] [--quick]

Known-truth cells in the project's formats (``tests/test_alignment.py``): checkpoint
quality 1.0, 1.5, 1.5, 1.5, 1.5 (steps 1000 .. 5000: an early plateau), one-hot and random
init far below. Per setting, ``--runs`` replications with targets, noise and cells' seeds
varied: the share classed ``benefits, not aligned`` (the rule: the final against every
checkpoint at or before mid-pretraining, "not better by the margin" one-sided, Holm), and
what the first rules concluded from the same comparisons (the latest checkpoint at or before
mid-pretraining only, TOST equivalence or a significant decline). The same for a plateau
whose final ends 0.019 lower (within the margin).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PLATEAU = [1.0, 1.5, 1.5, 1.5, 1.5]
LOWER = [1.0, 1.5, 1.5, 1.5, 1.4]
SETTINGS = [(400, 0.0), (400, 0.9), (400, 0.95), (400, 0.97), (2000, 0.0), (8000, 0.0)]


def rates(n: int, shared: float, qualities, runs: int) -> tuple[float, float]:
    from test_alignment import checkpoint_analysis

    new = old = 0
    for rep in range(runs):
        with tempfile.TemporaryDirectory() as root:
            analysis = checkpoint_analysis(Path(root), n, 1000 + rep, qualities, shared=shared)
        final = analysis.taxonomy.set_index("checkpoint").loc["final"]
        new += final["alignment"] == "not aligned"
        rows = analysis.comparisons
        mid = rows[(rows["checkpoint"] == "final") & (rows["b"] == "pretrained @ s2000")].iloc[0]
        old += bool(mid["p_equiv"] < 0.05 or (mid["p_value"] < 0.05 and mid["delta"] < 0))
    return new / runs, old / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="skip 2,000 and 8,000 proteins")
    args = parser.parse_args()
    start = time.time()
    print(f"{'curve':<22} {'proteins':>8} {'shared':>6} {'not aligned':>11} {'first rules':>11}")
    for name, qualities in (("plateau", PLATEAU), ("plateau, final -0.019", LOWER)):
        for n, shared in SETTINGS:
            if args.quick and n > 400:
                continue
            new, old = rates(n, shared, qualities, args.runs)
            print(f"{name:<22} {n:>8} {shared:>6.2f} {new:>11.2f} {old:>11.2f}", flush=True)
    print(f"{args.runs} runs per row, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
