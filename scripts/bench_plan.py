"""How long ``ptransfer plan`` takes on the big presets (wall and CPU time, best of N).

    python scripts/bench_plan.py [--repeats 3] [--experiments paper_ablations esm2_checkpoints]
        [--data ../shared/data]

Each run is a fresh ``python -m ptransfer.cli plan +experiment=X`` in a subprocess with an
empty results folder (nothing done: every cell is planned), as a user would type it. The
machine's load average is printed with the numbers: on a shared box, wall time follows it.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time


def run_once(experiment: str, results: str, data: str | None) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    extra = [f"data.root={data}"] if data else []
    proc = subprocess.run([sys.executable, "-m", "ptransfer.cli", "plan",
                           f"+experiment={experiment}", f"results_dir={results}", *extra],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    first = proc.stdout.splitlines()[0]
    return wall, cpu, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--experiments", nargs="+",
                        default=["paper_ablations", "esm2_checkpoints"])
    parser.add_argument("--data", default=None,
                        help="data.root (tasks found there are loaded: exact shard plans)")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for experiment in args.experiments:
        with tempfile.TemporaryDirectory() as results:
            runs = [run_once(experiment, results, args.data) for _ in range(args.repeats)]
        wall = min(r[0] for r in runs)
        cpu = min(r[1] for r in runs)
        print(f"{experiment}: {runs[0][2]}: best wall {wall:.1f} s, best CPU {cpu:.1f} s "
              f"(walls: {', '.join(f'{r[0]:.1f}' for r in runs)})")
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
