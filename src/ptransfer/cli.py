"""The ``ptransfer`` command: parse, dispatch, no logic (the help page is :data:`SUMMARY`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# command -> (one line, an example): the help page lists those of COMMANDS, in this order.
SUMMARY = {
    "run": ("one cell, or a sweep with -m (anywhere) / +experiment=...",
            "ptransfer run task=gb1_two_vs_rest model=onehot data.root=../shared/data"),
    "plan": ("what a sweep would do (cells, done, disk, GPU time), without running it",
             "ptransfer plan +experiment=gb1"),
    "collect": ("merge every rows.csv under DIR into DIR/results.csv; intervals, comparisons, taxonomy",
                "ptransfer collect results"),
    "report": ("figures, summary tables and index.html from a results.csv",
               "ptransfer report results/results.csv --out report"),
    "data": ("list the known datasets under data.root, or download one (SHA-256 checked)",
             "ptransfer data list data.root=../shared/data"),
    "pretrain": ("masked-LM pretraining of a small model: a checkpoint series",
                 "ptransfer pretrain data.root=../shared/data cpu_threads=1"),
    "store": ("check embedding stores (checksums) and report damaged ones",
              "ptransfer store verify results/embeddings"),
}
PLAN_HELP = """usage: ptransfer plan [HYDRA OVERRIDES ...]

What `ptransfer run -m` with the same overrides would do, without running anything: the
cells of the sweep (hydra.sweeper.params of an +experiment preset, plus any key=a,b
overrides), which are outside the design, which are done, running or interrupted, the
jobs it would dispatch (each store's shards with their estimated GPU time and the streaming
cells on GPUs, the cells that only read on CPUs), the GPU estimate, the makespan on the
launcher's slots, the expected embedding disk. The overrides are those of `run`
(-m / --multirun may stand anywhere; plan always plans the whole sweep).

example: ptransfer plan +experiment=gb1 data.root=../shared/data"""
# Hydra flags that take no value: they may stand anywhere on `ptransfer run`'s command line.
_MULTIRUN_FLAGS = ("-m", "--multirun")
_HYDRA_INFO_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info",
                     "--resolve", "-p", "--package", "--version")


def help_page() -> str:
    """The page bare ``ptransfer`` and ``ptransfer --help`` print."""
    from ptransfer import __version__

    width = max(len(c) for c in COMMANDS)
    lines = [f"ptransfer {__version__}: which layer of which protein language model helps "
             "which task, and how much of that is pretraining.", "",
             "usage: ptransfer COMMAND [ARGS ...]    (ptransfer COMMAND --help for details)",
             "", "commands:"]
    for name in (n for n in SUMMARY if n in COMMANDS):
        line, example = SUMMARY[name]
        lines += [f"  {name:<{width}}  {line}", f"  {'':<{width}}    e.g. {example}"]
    lines += ["", "run, plan and pretrain take Hydra overrides (key=value, README.md lists "
              "the keys); data takes data.root=DIR.", "  ptransfer --version    print the version"]
    return "\n".join(lines)


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
    from ptransfer.cell.config_checks import precheck
    from ptransfer.sweep.done import skip_done_sweep
    from ptransfer.sweep.job import run_job
    from ptransfer.sweep.parent import sweep_parent
    from ptransfer.sweep.summary import FAILED
    from ptransfer.sweep.task_names import check_task_names

    # Hydra's own parser wants -m before the overrides; accept it anywhere, as Hydra's docs do.
    flags = [a for a in argv if a in _MULTIRUN_FLAGS][:1]
    argv = flags + [a for a in argv if a not in _MULTIRUN_FLAGS]
    checked = not any(a in _HYDRA_INFO_FLAGS for a in argv)
    overrides = [a for a in argv if not a.startswith("-")]
    if checked:  # every value first: a bad one writes nothing, not even the key cache
        precheck(CONF_DIR, overrides)
    if skip_done_sweep(CONF_DIR, argv):  # a finished sweep: nothing for Hydra to launch
        return 0
    if checked and flags:  # a sweep: one task name must mean one task (sweep/task_names.py)
        check_task_names(CONF_DIR, overrides)
    FAILED["count"] = 0  # this command's failures only (main() may be called again in-process)
    with sweep_parent():  # its workers stop if this process dies (sweep/parent.py)
        _hydra_entry(run_job, ["run", *argv])
    return 1 if FAILED["count"] else 0


def cmd_plan(argv: list[str]) -> int:
    from ptransfer.cell.config_checks import precheck
    from ptransfer.sweep.plan import print_plan

    if any(a in ("-h", "--help") for a in argv):
        print(PLAN_HELP)
        return 0
    argv = [a for a in argv if a not in _MULTIRUN_FLAGS]  # plan always plans the sweep
    options = [a for a in argv if a.startswith("-")]
    if options:
        raise ValueError(f"unknown option {options[0]!r}: plan takes the overrides of "
                         "`ptransfer run` (key=value, -m allowed anywhere)")
    precheck(CONF_DIR, argv, writable=False)
    print_plan(CONF_DIR, argv)
    return 0


def _margin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--margin", action="append", default=[], metavar="METRIC=VALUE",
        help="smallest effect of interest for equivalence (repeatable; also written "
             "analysis.margin.METRIC=VALUE); defaults: spearman/pearson 0.02, accuracy/"
             "macro_f1/ndcg/roc_auc 0.01, mse none (docs/statistics.md)")


def _parse_with_margins(parser: argparse.ArgumentParser, argv: list[str]):
    """Arguments, and the margins from --margin and analysis.margin.METRIC=VALUE items."""
    from ptransfer.analysis.margins import parse_margins

    keyed = [a for a in argv if a.startswith("analysis.margin.")]
    args = parser.parse_args([a for a in argv if a not in keyed])
    return args, parse_margins([*args.margin, *keyed])


def cmd_collect(argv: list[str]) -> int:
    from ptransfer.analysis.collect import collect

    parser = argparse.ArgumentParser(
        prog="ptransfer collect", description="merge the complete cells' rows.csv under DIR; "
        "write results.csv, summary, intervals, comparisons, taxonomy, depth, repstat and "
        "collect.json, all at once")
    parser.add_argument("dir", nargs="?", default="results", help="results root (default results)")
    parser.add_argument("--resamples", type=int, default=1000,
                        help="bootstrap resamples for intervals and comparisons (default 1000, "
                             "at least 100)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    _margin_option(parser)
    args, margins = _parse_with_margins(parser, argv)
    done = collect(args.dir, n_resamples=args.resamples, seed=args.seed, margins=margins)
    for cell, reason in done.left_out:
        print(f"left out {cell}: {reason}")
    print(f"{len(done.merged)} rows from {len(done.cells)} cells"
          + (f" ({len(done.left_out)} cells left out, listed above)" if done.left_out else "")
          + f" -> {Path(args.dir) / 'results.csv'} (collect run {done.run_id})")
    for path in done.tables[1:]:
        print(f"wrote {path}")
    print(done.depth_line)
    return 0


def cmd_report(argv: list[str]) -> int:
    from ptransfer.analysis.report import make_report

    parser = argparse.ArgumentParser(prog="ptransfer report", description="figures and tables")
    parser.add_argument("results", help="results.csv written by `ptransfer collect`")
    parser.add_argument("--out", default="report", help="output folder (default report/)")
    _margin_option(parser)
    args, margins = _parse_with_margins(parser, argv)
    from ptransfer.cell.config_checks import check_writable

    check_writable(args.out, "--out")
    paths = make_report(args.results, args.out, margins=margins)
    print(f"wrote {len(paths)} files; open {Path(args.out) / 'index.html'}")
    return 0


def cmd_data(argv: list[str]) -> int:
    from ptransfer import data

    root, argv = data.split_root_option(argv)
    parser = argparse.ArgumentParser(
        prog="ptransfer data", description="datasets under the data root",
        epilog="the root: data.root=DIR or --root DIR, anywhere on the line (default data/)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="known datasets and whether they are present")
    dl = sub.add_parser("download", help="download a dataset, checking SHA-256")
    dl.add_argument("name")
    dl.add_argument("--mirror", default=None, help="base URL replacing the public sources")
    dl.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if args.action == "list":
        print(data.root_line(root))
        for entry in data.list_datasets(root):
            print(data.format_entry(entry))
        return 0
    for path in data.download(args.name, root, mirror=args.mirror, force=args.force):
        print(f"ok {path}")
    return 0


def cmd_pretrain(argv: list[str]) -> int:
    from ptransfer.cell.config_checks import check_writable, precheck
    from ptransfer.pretrain.settings import check_pretrain_values
    from ptransfer.pretrain.train import run_pretrain

    if not any(a in _HYDRA_INFO_FLAGS for a in argv):  # every value, then the folder
        cfg = precheck(CONF_DIR, [a for a in argv if not a.startswith("-")], writable=False,
                       config_name="pretrain")
        check_pretrain_values(cfg)
        check_writable(cfg.results_dir)
    failed: list[str] = []

    def job(cfg) -> None:  # under Hydra: its handler would print a chained traceback
        try:
            run_pretrain(cfg)
        except (FileNotFoundError, ValueError, KeyError) as err:  # data, config: one line
            failed.append(str(err))

    _hydra_entry(job, ["pretrain", *argv], config_name="pretrain")
    for message in failed:
        print(f"ptransfer pretrain: error: {message}", file=sys.stderr)
    return 1 if failed else 0


def cmd_store(argv: list[str]) -> int:
    """``ptransfer store verify [DIR | FILE | results_dir=R | store_dir=S]``: exit 1 if a
    file is damaged or missing."""
    from ptransfer.embed.verify import exit_status, verify_path

    parser = argparse.ArgumentParser(prog="ptransfer store", description="embedding stores")
    sub = parser.add_subparsers(dest="action", required=True)
    verify = sub.add_parser("verify", help="read every block of every store; list damaged ones")
    verify.add_argument("dir", nargs="?", default="results/embeddings",
                        help="store folder, one store or shard file, or results_dir=R / "
                             "store_dir=S (default results/embeddings)")
    args = parser.parse_args(argv)
    key, _, value = args.dir.partition("=")
    root = {"results_dir": Path(value) / "embeddings", "store_dir": Path(value)}.get(
        key, Path(args.dir)) if value else Path(args.dir)
    verdicts, _ = verify_path(root)
    return exit_status(verdicts)


COMMANDS = {
    "run": cmd_run,
    "plan": cmd_plan,
    "collect": cmd_collect,
    "report": cmd_report,
    "data": cmd_data,
    "pretrain": cmd_pretrain,
    "store": cmd_store,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(help_page())
        return 0
    if argv[0] in ("-V", "--version"):
        from ptransfer import __version__

        print(f"ptransfer {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"ptransfer: unknown command {command!r}\n\n{help_page()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[command](rest)
    except KeyboardInterrupt:  # Ctrl-C: every write is atomic, so what is finished stays
        resumes = "; re-run resumes" if command in ("run", "pretrain", "collect") else ""
        print(f"ptransfer {command}: interrupted{resumes}", file=sys.stderr)
        return 130
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"ptransfer {command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a read-only or full disk, a file in the way: it names the path
        print(f"ptransfer {command}: error: {err.strerror or err}: {err.filename}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
