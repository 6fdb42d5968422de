"""The tree reads as the pipeline: one package per stage, imports flowing one way, small modules.

Stages, bottom up: tasks and encoders -> embed -> heads -> cell (one cell) -> sweep (many
cells); analysis (results and conclusions; a cell writes rows through its schema) and
pretrain beside them; ``cli`` sits on top. ``metrics``, ``data``, ``processes`` and the package
root are shared foundations. The Hydra config (``omegaconf``) stays at the doors: ``cell``, ``sweep``,
``pretrain`` and ``cli``; every stage below takes typed specs or plain values.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import ptransfer

SRC = Path(ptransfer.__file__).resolve().parent
FOUNDATION = {"ptransfer", "metrics", "data", "processes"}
# stage -> the stages (besides the foundation) it may import from.
ALLOWED = {
    "tasks": set(),
    "encoders": set(),
    "embed": {"encoders", "tasks"},
    "heads": {"embed", "encoders", "tasks"},
    "cell": {"heads", "embed", "encoders", "tasks", "analysis"},
    "sweep": {"cell", "heads", "embed", "encoders", "tasks", "analysis"},
    "analysis": set(),
    "pretrain": {"encoders", "tasks"},
}
STAGES = sorted(ALLOWED)
CONFIG_DOORS = {"cell", "sweep", "pretrain", "cli"}  # where omegaconf may be imported
MAX_LINES = 420


def _module_name(path: Path) -> str:
    parts = ("ptransfer", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py")) if p.stem != "__main__"}


def _external_imports(path: Path) -> set[str]:
    """Top-level names of the non-ptransfer modules ``path`` imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
    return found


def _imports(path: Path) -> set[str]:
    """Every ptransfer module ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ptransfer"):
            for alias in node.names:  # `from pkg import mod` imports a module, not a name
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ptransfer")}
    return found - {_module_name(path)}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ptransfer"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_is_a_package(stage):
    assert (SRC / stage / "__init__.py").is_file()
    assert importlib.import_module(f"ptransfer.{stage}").__doc__, f"ptransfer.{stage} has no docstring"


def test_no_top_level_modules_beyond_cli_data_metrics():
    loose = {m.name for m in pkgutil.iter_modules([str(SRC)]) if not m.ispkg}
    assert loose <= {"cli", "data", "metrics", "processes", "__main__"}, loose


@pytest.mark.parametrize("stage", STAGES)
def test_stage_imports_only_from_below(stage):
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items() if _stage(module) == stage
        for target in targets
        if _stage(target) != stage and _stage(target) not in FOUNDATION | ALLOWED[stage]
    )
    assert not wrong, "\n".join(wrong)


def _config_leaks(modules: dict[str, Path]) -> list[str]:
    return sorted(name for name, path in modules.items()
                  if _stage(name) not in CONFIG_DOORS and "omegaconf" in _external_imports(path))


def test_the_hydra_config_stays_at_the_doors():
    # Below the doors a stage takes a typed spec (cell.spec.CellSpec, heads.spec.HeadSpec,
    # embed.settings.ExtractSettings) or plain values, never the composed DictConfig.
    leaks = _config_leaks(MODULES)
    assert not leaks, f"import omegaconf outside {sorted(CONFIG_DOORS)}: {leaks}"


def test_the_config_door_check_finds_a_leak(tmp_path):
    planted = tmp_path / "fit_layers.py"
    planted.write_text("from omegaconf import DictConfig\n")
    assert _config_leaks({"ptransfer.heads.fit_layers": planted}) == ["ptransfer.heads.fit_layers"]


def test_no_import_cycle_between_modules():
    # Depth-first search; a grey node met again is a cycle.
    colour, stack = dict.fromkeys(GRAPH, "white"), []

    def visit(node: str) -> None:
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(GRAPH[node] & GRAPH.keys()):
            if nxt.startswith(node + "."):
                continue  # a package's __init__ re-exporting its own modules is no cycle
            if colour[nxt] == "grey":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if colour[nxt] == "white":
                visit(nxt)
        stack.pop()
        colour[node] = "black"

    for name in sorted(GRAPH):
        if colour[name] == "white":
            visit(name)


def test_the_cycle_detector_finds_a_cycle(monkeypatch):
    # The test above must be able to fail: plant store <-> store_files and watch it.
    planted = {k: set(v) for k, v in GRAPH.items()}
    planted["ptransfer.embed.store_files"].add("ptransfer.embed.store")
    monkeypatch.setitem(globals(), "GRAPH", planted)
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle_between_modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[module]} has {n} lines: split it along a concept"


def test_python_dash_m_ptransfer_prints_help():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ptransfer", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "run" in out.stdout and "collect" in out.stdout
