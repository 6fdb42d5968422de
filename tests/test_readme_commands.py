"""Every ``ptransfer`` command in README.md's fenced bash blocks names a real subcommand and
real configs, and the run / plan / pretrain ones compose with Hydra (composed, not run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ptransfer.cell.config_checks import _fixed_overrides, check_config
from ptransfer.cli import COMMANDS, CONF_DIR
from ptransfer.data import DATASETS

README = Path(__file__).resolve().parents[1] / "README.md"
HYDRA_COMMANDS = {"run": "config", "plan": "config", "pretrain": "pretrain"}


def readme_commands(text: str) -> list[list[str]]:
    """The argument lists of every ``ptransfer ...`` in the README's ```bash blocks."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0] == "ptransfer":
                    commands.append(words[1:])
    return commands


COMMANDS_IN_README = readme_commands(README.read_text())


def test_the_readme_has_commands_of_every_kind():
    used = {c[0] for c in COMMANDS_IN_README if c}
    assert {"run", "plan", "collect", "report", "data", "pretrain"} <= used


def test_parser_finds_chained_and_commented_commands():
    text = "```bash\nptransfer collect r && ptransfer report r/x.csv  # note\npip x\n```\n"
    assert readme_commands(text) == [["collect", "r"], ["report", "r/x.csv"]]


def _group_option_exists(override: str, config_dir: Path) -> bool | None:
    """True/False when ``override`` picks a config group option; None when it sets a key."""
    key, _, value = override.lstrip("+~").partition("=")
    if "." in key or not value or "," in value:
        return None
    if key.startswith("hydra"):
        return None  # hydra/launcher=... may come from a plugin package: compose checks it
    group = config_dir / key
    return (group / f"{value}.yaml").is_file() if group.is_dir() else None


@pytest.mark.parametrize("argv", COMMANDS_IN_README, ids=lambda a: " ".join(a))
def test_readme_command_is_real(argv):
    assert argv, "a bare `ptransfer` in a README block"
    command, rest = argv[0], argv[1:]
    if command.startswith("-"):
        assert command in ("--help", "-h", "--version")
        return
    assert command in COMMANDS, f"README uses unknown subcommand {command!r}"
    if command in HYDRA_COMMANDS:
        overrides = [a for a in rest if a not in ("-m", "--multirun")]
        for item in overrides:
            assert "=" in item, f"{item!r} is not a key=value override"
            found = _group_option_exists(item, CONF_DIR)
            assert found is not False, f"{item!r}: no such config option"
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(HYDRA_COMMANDS[command], overrides=_fixed_overrides(overrides))
        if command != "pretrain":
            check_config(cfg, CONF_DIR)
    elif command == "data":
        actions = [a for a in rest if a in ("list", "download")]
        assert len(actions) == 1, argv
        if actions[0] == "download":
            name = rest[rest.index("download") + 1]
            assert name in DATASETS, f"README downloads unknown dataset {name!r}"
    elif command == "collect":  # a folder, then margins (analysis.margin.METRIC=VALUE)
        from ptransfer.analysis.margins import parse_margins

        margins = [a for a in rest if a.startswith("analysis.margin.")]
        assert len(rest) - len(margins) <= 1
        parse_margins(margins)
    elif command == "report":
        assert rest and rest[0].endswith(".csv")
