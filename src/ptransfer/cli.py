"""The ``ptransfer`` command: parse, dispatch, no logic.

    ptransfer run [hydra overrides]          one cell, or a sweep with -m / +experiment=...
    ptransfer plan [hydra overrides]         what a sweep would do, without running it
    ptransfer collect DIR                    merge every rows.csv under DIR into DIR/results.csv,
                                             with intervals, comparisons and the taxonomy
    ptransfer report RESULTS.csv --out DIR   figures, summary tables and index.html
    ptransfer data list | download NAME      datasets under data.root
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

HELP = __doc__


def _hydra_entry(task_function, argv: list[str], config_name: str = "config") -> None:
    """Run ``task_function`` under @hydra.main with ``argv`` as its command line."""
    import hydra

    if not CONF_DIR.is_dir():
        raise SystemExit(f"ptransfer: config folder {CONF_DIR} not found (install with pip -e .)")
    wrapped = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(
        task_function
    )
    saved = sys.argv
    sys.argv = [f"ptransfer {argv[0] if argv else ''}".strip(), *argv[1:]]
    try:
        wrapped()
    finally:
        sys.argv = saved


def cmd_run(argv: list[str]) -> int:
    from ptransfer.grid.sweep import FAILED, run_job

    _hydra_entry(run_job, ["run", *argv])
    return 1 if FAILED["count"] else 0


def cmd_plan(argv: list[str]) -> int:
    from ptransfer.grid.plan import print_plan

    print_plan(CONF_DIR, argv)
    return 0


def cmd_collect(argv: list[str]) -> int:
    from ptransfer.analysis.rows import RESULTS_FILE, collect

    parser = argparse.ArgumentParser(prog="ptransfer collect", description="merge rows.csv files")
    parser.add_argument("dir", nargs="?", default="results", help="results root (default results)")
    parser.add_argument("--resamples", type=int, default=1000,
                        help="bootstrap resamples for intervals and comparisons (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = parser.parse_args(argv)
    merged = collect(args.dir)
    print(f"{len(merged)} rows from {merged.cell_id.nunique()} cells -> "
          f"{Path(args.dir) / RESULTS_FILE}")
    from ptransfer.analysis.summary import analyse, write_tables

    analysis = analyse(merged, args.dir, n_resamples=args.resamples, seed=args.seed)
    for path in write_tables(merged, Path(args.dir), analysis=analysis):
        print(f"wrote {path}")
    return 0


def cmd_report(argv: list[str]) -> int:
    from ptransfer.analysis.report import make_report

    parser = argparse.ArgumentParser(prog="ptransfer report", description="figures and tables")
    parser.add_argument("results", help="results.csv written by `ptransfer collect`")
    parser.add_argument("--out", default="report", help="output folder (default report/)")
    args = parser.parse_args(argv)
    paths = make_report(args.results, args.out)
    print(f"wrote {len(paths)} files; open {Path(args.out) / 'index.html'}")
    return 0


def cmd_data(argv: list[str]) -> int:
    from ptransfer import data

    parser = argparse.ArgumentParser(prog="ptransfer data", description="datasets")
    parser.add_argument("--root", default="data", help="data root (default data/)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="known datasets and whether they are present")
    dl = sub.add_parser("download", help="download a dataset, checking SHA-256")
    dl.add_argument("name")
    dl.add_argument("--mirror", default=None, help="base URL replacing the public sources")
    dl.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if args.action == "list":
        for entry in data.list_datasets(args.root):
            print(data.format_entry(entry))
        return 0
    for path in data.download(args.name, args.root, mirror=args.mirror, force=args.force):
        print(f"ok {path}")
    return 0


def cmd_pretrain(argv: list[str]) -> int:
    from ptransfer.pretrain.train import run_pretrain

    _hydra_entry(run_pretrain, ["pretrain", *argv], config_name="pretrain")
    return 0


COMMANDS = {
    "run": cmd_run,
    "plan": cmd_plan,
    "collect": cmd_collect,
    "report": cmd_report,
    "data": cmd_data,
    "pretrain": cmd_pretrain,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"ptransfer: unknown command {command!r}\n{HELP}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[command](rest)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"ptransfer {command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
