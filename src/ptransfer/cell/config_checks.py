"""Check a composed config before anything runs: unknown keys, value types, results_dir.

Hydra accepts ``+seeed=1`` (a new key) and ``seed=abc`` (a string where an int belongs)
without complaint; the mistake then surfaces deep in a cell as ``invalid literal for int()``
or not at all. :func:`check_config` runs once, right after composing (``ptransfer run``
before Hydra starts, every run job, ``ptransfer plan``), and raises :class:`ConfigError`
naming the key. What it checks is driven by ``conf/config.yaml`` itself, so a key added
there is known and typed without editing this module:

- top-level keys: those of ``conf/config.yaml`` plus the config groups (folders of
  ``conf/``); anything else is rejected with the list of known keys;
- scalar keys (top level and nested mappings such as ``extract`` and ``grid``): the composed
  value must have the type of the default (int, float, bool; a string default takes any
  scalar, a null default anything);
- ``subsample``: null or a mapping split -> non-negative integer;
- values (``config_values``): names that become paths are safe, required values are given.

:func:`check_writable` turns an unwritable ``results_dir`` (and ``store_dir``, when a cell
reads a store) into one line naming it.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from ptransfer.cell.config_values import (  # noqa: F401 - ConfigError: this module's API
    PRETRAIN_NAME_KEYS,
    ConfigError,
    check_values,
)
from ptransfer.cell.spec import CellSpec, reads_store

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # the repository's configs


@functools.lru_cache(maxsize=4)
def _defaults(conf_dir: str, name: str = "config") -> tuple[dict, frozenset[str]]:
    """(``<name>.yaml``'s own values, unresolved; every known top-level key)."""
    raw = OmegaConf.load(Path(conf_dir) / f"{name}.yaml")
    values = OmegaConf.to_container(raw, resolve=False)
    # The groups of the defaults list (task, model, ...; "override hydra/x" entries are not).
    groups = {next(iter(d)) for d in values.pop("defaults", []) if isinstance(d, dict)}
    groups = {g for g in groups if "/" not in g and not g.startswith("override")}
    return values, frozenset(values) | groups


def _type_error(key: str, expected: str, value) -> ConfigError:
    return ConfigError(f"config key {key!r}: expected {expected}, got {value!r} "
                       f"({type(value).__name__})")


NULLABLE = {"extract.shard_max_gpu_minutes", "extract.shard_max_gb"}  # null: no limit


def _check_scalar(key: str, default, value) -> None:
    """Raise unless ``value`` has the type of ``default`` (see the module docstring)."""
    if value is None and key in NULLABLE:
        return
    if default is None or isinstance(default, str):
        if isinstance(value, (dict, list, DictConfig, ListConfig)) and isinstance(default, str):
            raise _type_error(key, "a single value", value)
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise _type_error(key, "true or false", value)
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, "an integer", value)
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(key, "a number", value)


def _check_tree(prefix: str, defaults: dict, cfg: DictConfig) -> None:
    for name, default in defaults.items():
        key = f"{prefix}{name}"
        if name not in cfg or isinstance(default, list):
            continue
        node = cfg._get_node(name)
        if node._is_interpolation() or OmegaConf.is_missing(cfg, name):
            continue  # resolved where used; an interpolation error names its own key
        value = cfg[name]
        if isinstance(default, dict):
            if not isinstance(value, DictConfig):
                raise _type_error(key, "a mapping of keys", value)
            _check_tree(f"{key}.", default, value)
        else:
            _check_scalar(key, default, value)


def check_subsample(value) -> None:
    """``subsample``: null, or {split: n} with n a non-negative integer."""
    if value is None:
        return
    if not isinstance(value, DictConfig):
        raise _type_error("subsample", "null or a mapping {split: n}, e.g. {train: 2000}",
                          value)
    for split, n in value.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise _type_error(f"subsample.{split}", "a non-negative integer", n)


def check_config(cfg: DictConfig, conf_dir: str | Path) -> None:
    """Raise :class:`ConfigError` for the first unknown top-level key or mistyped value."""
    defaults, known = _defaults(str(conf_dir))
    unknown = sorted(k for k in cfg if k not in known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; known top-level keys: "
                          f"{', '.join(sorted(known))}")
    _check_tree("", {k: v for k, v in defaults.items() if k not in ("subsample", "hydra")},
                cfg)
    check_subsample(cfg.get("subsample"))
    check_values(cfg)
    check_tune(cfg)
    check_shard_targets(cfg)


def check_tune(cfg: DictConfig) -> None:
    """``tune``: a valid ``TuneSpec`` (types, ranges, known keys). Whether the model can be
    fine-tuned so is a cell's own check (``check_before_load``) and, in sweeps, a rule of the
    design (``sweep.design``): it depends on two axes at once."""
    from ptransfer.tune.spec import TuneSpec

    node = cfg.get("tune")
    try:
        TuneSpec.from_mapping(OmegaConf.to_container(node, resolve=True) if node else {})
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None


def check_shard_targets(cfg: DictConfig) -> None:
    """The shard targets (``extract.shard_*``): positive or null, the key named otherwise."""
    from ptransfer.embed.shard_sizing import DEFAULT_GB, DEFAULT_GPU_MINUTES, ShardSizing

    extract = cfg.get("extract") or {}
    try:
        ShardSizing(extract.get("shard_max_gpu_minutes", DEFAULT_GPU_MINUTES),
                    extract.get("shard_max_gb", DEFAULT_GB), extract.get("shard_tokens"))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _added_keys(cfg: dict, base: dict, prefix: str = "") -> list[tuple[str, list[str]]]:
    """(key, the known keys beside it) for every key of ``cfg`` that ``base`` lacks."""
    found = []
    for name, value in cfg.items():
        if name not in base:
            found.append((f"{prefix}{name}", sorted(base)))
        elif isinstance(value, dict) and isinstance(base[name], dict):
            found += _added_keys(value, base[name], f"{prefix}{name}.")
    return found


def check_pretrain_config(cfg: DictConfig, base: DictConfig, conf_dir: str | Path) -> None:
    """``ptransfer pretrain``'s config: no key beyond those of ``base`` (the same command line
    without its ``+key=value`` additions), at any depth, and the value types of
    ``conf/pretrain.yaml``. A training run takes hours: a mistyped key must not start one."""
    added = _added_keys(OmegaConf.to_container(cfg, resolve=False),
                        OmegaConf.to_container(base, resolve=False))
    if added:
        where = added[0][0].rpartition(".")[0]
        scope = f"keys of {where}" if where else "top-level keys"
        raise ConfigError(f"unknown config key(s) {[k for k, _ in added]}; known {scope}: "
                          f"{', '.join(added[0][1])}")
    defaults, _ = _defaults(str(conf_dir), "pretrain")
    _check_tree("", {k: v for k, v in defaults.items() if k != "hydra"}, cfg)
    check_values(cfg, PRETRAIN_NAME_KEYS)


def check_writable(directory: str | Path, key: str = "results_dir") -> None:
    """Create ``directory`` if needed and prove a file can be written there."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"{key}={directory}: cannot write there "
                          f"({err.strerror or err}); choose a writable {key}") from None


def _split_sweeps(overrides: list[str]) -> tuple[list[str], list[list[str]]]:
    """(the overrides that are not sweeps, each sweep's choices as ``key=value`` strings)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed, sweeps = [], []
    for item in overrides:
        override = parser.parse_override(item)
        if not override.is_sweep_override():
            fixed.append(item)
            continue
        key = override.get_key_element()
        sweeps.append([f"{key}={v}" for v in override.sweep_string_iterator()])
    return fixed, sweeps


def _fixed_overrides(overrides: list[str]) -> list[str]:
    """The overrides that are not sweeps (``a,b``, ``range(...)``): one composable config."""
    return _split_sweeps(overrides)[0]


def precheck(conf_dir: str | Path, overrides: list[str], writable: bool = True,
             config_name: str = "config") -> DictConfig:
    """Check the command line's config before anything runs; returns it composed (each sweep
    axis at its first choice).

    Composes the non-sweep overrides with the first choice of every command-line sweep axis,
    then each other choice of each axis in its place (one compose per choice, not per
    combination; every compose is a whole cell's config, so required keys a sweep gives,
    e.g. ``task.path=a.csv,b.csv``, are present), checks every result, and
    (``writable``) that results_dir can be written. ``ptransfer run`` and ``plan`` call this
    first, so a typo, ``seed=1,abc`` or a read-only results_dir is one line, not a traceback
    from inside Hydra's start-up or a sweep stopped half-way.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    fixed, sweeps = _split_sweeps(overrides)
    firsts = [axis[0] for axis in sweeps]
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=[*fixed, *firsts])
            composed = [cfg]
            if config_name == "pretrain":
                base = compose(config_name, overrides=[o for o in fixed if o[:1] != "+"])
                check_pretrain_config(cfg, base, conf_dir)
                composed = []
            else:
                check_config(cfg, conf_dir)
            for i, axis in enumerate(sweeps):
                for choice in axis[1:]:
                    chosen = [*firsts[:i], choice, *firsts[i + 1:]]
                    composed.append(compose("config", overrides=[*fixed, *chosen]))
                    check_config(composed[-1], conf_dir)
    except HydraException as err:  # a bad override or an unknown option: Hydra's own words
        words = str(err).strip().split("\nConfig search path")[0]  # the path list is noise
        raise ConfigError(words) from None
    if writable:
        check_writable(cfg.results_dir)
        if any(reads_store(c) for c in composed):  # before any model is built
            check_writable(cfg.store_dir, "store_dir")
    return cfg


def check_before_load(spec: CellSpec, task) -> None:
    """What a cell can check with its task loaded and no model weights read.

    Runs before the cell writes anything (status, config, store): a task with a single
    training class, a residue outside the model's alphabet (named by file and row, as the
    task checks name them) or an impossible length policy fails here, so a cell that cannot
    run leaves no store, lock or temporary file behind.
    """
    from ptransfer.cell.encoder import build_encoder
    from ptransfer.embed.extract import check_length_policy
    from ptransfer.tasks.validate import check_classes

    check_classes(task)
    if spec.tune.trains:  # tune=lora on CARP, any fine-tune of one-hot: one line, nothing run
        from ptransfer.tune.targets import check_tunable

        config = spec.encoder.config
        check_tunable(spec.tune, spec.encoder.name, spec.encoder.family, config.get("arch"))
    if spec.reads_store:
        check_writable(spec.store_dir, "store_dir")
    encoder = build_encoder(spec.encoder)  # configuration only
    sequences = task.all_sequences()
    encoder.check_alphabet(sequences, task.info.get("source_rows"))
    check_length_policy(encoder, sequences, spec.extract.length_policy, task.level)
