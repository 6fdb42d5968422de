"""Benchmark: the cost of re-running a finished sweep (every cell already complete).

Runs ``ptransfer run -m +experiment=gb1 data.root=DATA results_dir=RESULTS`` (plus
``hydra/launcher=joblib`` with ``--launcher joblib``) ``--repeats`` times in fresh processes
and prints wall time and CPU time (user + system, children included) of each, and the
median. RESULTS must hold a finished sweep; ``--prepare`` runs the full sweep into it first
(about 5-10 minutes on a 2-core CPU).

``--src DIR`` runs another checkout's code (``DIR/src``, with its ``DIR/conf``), e.g. the
tree before a change (``git archive <commit> src conf | tar -x -C /tmp/before``), so
before/after figures come from the same machine and the same finished results.

    python scripts/bench_done_sweep.py --results /tmp/gb1_done --prepare
    python scripts/bench_done_sweep.py --results /tmp/gb1_done --launcher joblib
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="results_dir holding the finished sweep")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--experiment", default="gb1")
    parser.add_argument("--launcher", choices=["basic", "joblib"], default="basic")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prepare", action="store_true", help="run the full sweep first")
    parser.add_argument("--src", default=None, help="checkout whose src/ (and conf/) to run")
    return parser.parse_args()


def command(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "ptransfer", "run", "-m", f"+experiment={args.experiment}",
            f"data.root={args.data_root}", f"results_dir={args.results}"]
    if args.launcher == "joblib":
        argv.append("hydra/launcher=joblib")
    return argv


def timed(argv: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, its output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode:
        sys.exit(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return wall, cpu, out.stdout + out.stderr


def main() -> None:
    args = parse_args()
    env = os.environ.copy()
    src = Path(args.src) if args.src else REPO
    env["PYTHONPATH"] = str(src / "src")
    argv = command(args)
    if args.prepare:
        wall, cpu, _ = timed(argv, env)
        print(f"full sweep: {wall:.1f} s wall, {cpu:.1f} s CPU")
    walls, cpus = [], []
    for i in range(args.repeats):
        wall, cpu, output = timed(argv, env)
        if "nothing to do" not in output:
            sys.exit(f"run {i}: the sweep was not complete (no 'nothing to do' line):\n"
                     f"{output[-3000:]}")
        walls.append(wall)
        cpus.append(cpu)
        print(f"re-run {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU (user + system)")
    load = os.getloadavg()[0]
    print(f"{args.experiment} done-sweep re-run ({args.launcher} launcher, code from {src}): "
          f"median {statistics.median(walls):.2f} s wall, {statistics.median(cpus):.2f} s CPU "
          f"over {args.repeats} runs; 1-min load average {load:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
