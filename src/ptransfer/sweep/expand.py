"""A sweep's combinations and their configs, with one compose per choice, not per combination.

Composing a config takes Hydra 0.1-0.5 s, so planning ``paper_ablations`` (360
combinations) or ``esm2_checkpoints`` (1,008) one compose at a time takes minutes. A
combination's config is the fixed part of the command line composed once (the *base*),
changed by each swept axis: a config-group axis (``task=a,b``) by what composing base +
that choice changes (composed once per choice), a plain value axis (``seed=0,1``,
``checkpoint=...``) by setting the value, as Hydra does. When the changes of a
combination's axes touch disjoint keys, applying them to the base gives exactly Hydra's
config; when two axes change one key (rare) the combination is composed in full. The
combinations and their order are the basic sweeper's (``sweep_lists``), so job numbers and
the sweep order match ``ptransfer run -m``. tests/test_expand.py checks configs against full
composition.
"""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

Compose = Callable[[list[str]], DictConfig]
_DELETED = object()  # a key present in the base and absent from a choice's config
_PRIMITIVES = (str, int, float, bool, type(None))


def sweep_lists(params: dict | None, arguments: list[str]) -> OrderedDict[str, list[str]]:
    """Key -> its override strings, exactly as Hydra's basic sweeper builds its product:
    ``hydra.sweeper.params`` first, then the command line (a key given again replaces its
    choices, keeping its place); a non-sweep override is a list of one."""
    parser = OverridesParser.create()
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    lists: OrderedDict[str, list[str]] = OrderedDict()
    for override in parser.parse_overrides(lines):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise HydraException(f"the sweep {override.input_line!r} cannot be enumerated")
            lists[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            lists[key] = [f"{key}={override.get_value_element_as_str()}"]
    return lists


def combinations(lists: OrderedDict[str, list[str]]) -> list[list[str]]:
    """The cartesian product of ``sweep_lists``, in the basic sweeper's order."""
    return [list(combo) for combo in itertools.product(*lists.values())]


def _leaves(node, prefix: tuple = ()) -> dict[tuple, object]:
    if isinstance(node, dict) and node:
        out: dict[tuple, object] = {}
        for key, value in node.items():
            out.update(_leaves(value, (*prefix, key)))
        return out
    return {prefix: node}


def _diff(base: dict, other: dict) -> dict[tuple, object]:
    """Leaf paths whose value differs from ``base`` (``_DELETED`` where ``other`` lacks it)."""
    old, new = _leaves(base), _leaves(other)
    changed = {path: value for path, value in new.items()
               if path not in old or old[path] != value or type(old[path]) is not type(value)}
    changed.update({path: _DELETED for path in old if path not in new
                    and not any(path[:len(p)] == p for p in new)})
    return changed


def _overlap(a: dict[tuple, object], b: dict[tuple, object]) -> bool:
    """Whether two change sets touch one key (a path equal to, or inside, another)."""
    for x in a:
        for y in b:
            n = min(len(x), len(y))
            if x[:n] == y[:n]:
                return True
    return False


def _apply(base: dict, changes: dict[tuple, object]) -> dict:
    out = copy.deepcopy(base)
    for path, value in sorted(changes.items(), key=lambda kv: len(kv[0])):
        node = out
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if value is _DELETED:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = copy.deepcopy(value)
    return out


def _container(cfg: DictConfig) -> dict:
    data = OmegaConf.to_container(cfg, resolve=False)
    data.pop("hydra", None)  # launch settings: never part of a cell
    return data


@dataclass
class _Axis:
    choices: list[str]
    changes: list[dict[tuple, object]]


class SweepExpander:
    """Configs of every combination of a sweep (see the module docstring).

    Args:
        compose: overrides -> composed config (``hydra.compose`` inside an initialised
            config dir, or a config loader's ``load_sweep_config``).
        lists: ``sweep_lists(params, arguments)``.
        is_group: whether a key names a config group (its choices are composed); None:
            only keys whose base value is a mapping (``group_checker`` asks Hydra).
        check: validates a config (``check_config``); run on the base, on each choice's
            config and on each value of a value axis, not on every combination.
        repository: Hydra's config repository (``config_loader.repository``): options of a
            group axis that are plain files are read from it instead of composed.
    """

    def __init__(self, compose: Compose, lists: OrderedDict[str, list[str]],
                 is_group: Callable[[str], bool] | None = None,
                 check: Callable[[DictConfig], None] | None = None,
                 repository=None) -> None:
        self.n_composed = 0  # composes so far: the base, one per axis, overlaps
        self._compose = compose
        self._repository = repository
        self._check = check or (lambda cfg: None)
        self.lists = lists
        self.fixed = [choices[0] for choices in lists.values() if len(choices) == 1]
        base = self.compose(self.fixed)
        self.base = _container(base)
        self._is_group = is_group or (lambda key: False)
        self._swept = [i for i, choices in enumerate(lists.values()) if len(choices) > 1]
        self.axes = [self._axis(key, choices, base) for key, choices in lists.items()
                     if len(choices) > 1]

    def compose(self, overrides: list[str]) -> DictConfig:
        """Hydra's config for ``overrides``, checked by ``check`` (every key a combination
        has comes from the base or one choice, so checking these checks every combination)."""
        self.n_composed += 1
        cfg = self._compose(overrides)
        self._check(cfg)
        return cfg

    def _axis(self, key: str, choices: list[str], base: DictConfig) -> _Axis:
        values = self._plain_values(key, choices, base)
        if values is not None:
            path = tuple(key.split("."))
            return _Axis(choices, [{path: value} for value in values])
        changes = self._group_changes(key, choices)
        if changes is None:
            changes = [_diff(self.base, _container(self.compose([*self.fixed, c])))
                       for c in choices]
        return _Axis(choices, changes)

    def _group_changes(self, key: str, choices: list[str]) -> list[dict] | None:
        """A config-group axis whose options are plain files (no defaults list, default
        package): each choice replaces the group's node by the file's content. Checked
        against Hydra by composing the first choice; None when that does not hold (then
        every choice is composed)."""
        repository = self._repository
        if repository is None or "/" in key or not key.isidentifier():
            return None
        contents = []
        for choice in choices:
            option = choice.split("=", 1)[1]
            try:
                loaded = repository.load_config(f"{key}/{option}")
            except Exception:  # noqa: BLE001 - anything unusual: let Hydra compose it
                return None
            if (loaded is None or loaded.header.get("package") not in (None, "")
                    or "defaults" in loaded.config):
                return None
            contents.append(OmegaConf.to_container(loaded.config, resolve=False))
        predicted = [_diff(self.base, {**self.base, key: content}) for content in contents]
        if predicted[0] != _diff(self.base, _container(self.compose([*self.fixed, choices[0]]))):
            return None
        for change in predicted[1:]:  # the other choices' configs, checked as composed ones
            self._check(OmegaConf.create(_apply(self.base, change)))
        return predicted

    def _plain_values(self, key: str, choices: list[str], base: DictConfig) -> list | None:
        """The values of a plain value axis (None: compose each choice)."""
        parser = OverridesParser.create()
        override = parser.parse_override(f"{key}={','.join(c.split('=', 1)[1] for c in choices)}")
        if (override.is_add() or override.is_force_add() or override.is_delete()
                or override.package is not None or "/" in key or key.startswith("hydra")
                or self._is_group(key)):
            return None
        current = OmegaConf.select(base, key, default=_DELETED)
        if current is _DELETED or isinstance(current, (DictConfig, ListConfig)):
            return None
        try:
            values = list(override.sweep_iterator())
        except HydraException:
            return None
        if len(values) != len(choices) or not all(type(v) in _PRIMITIVES for v in values):
            return None
        for value in values:  # each value as the config would hold it
            probe = detached(base)
            with open_dict(probe):
                OmegaConf.update(probe, key, value, merge=False)
            self._check(probe)
        return values

    def __iter__(self) -> Iterator[tuple[list[str], DictConfig]]:
        """(override strings, config) of every combination, in sweep order.

        The config object is reused and updated in place from one combination to the next
        (only the keys of axes whose choice changed are set): use it before the next step,
        or copy it (``detached``) to keep it.
        """
        paths = [set().union(*axis.changes) for axis in self.axes]
        if any(_overlap(dict.fromkeys(a), dict.fromkeys(b))
               for a, b in itertools.combinations(paths, 2)):
            for combo in itertools.product(*self.lists.values()):
                yield list(combo), self.config_of(combo)  # axes share keys: one by one
            return
        cfg = OmegaConf.create(self.base)
        current: list[int | None] = [None] * len(self.axes)
        for combo in itertools.product(*self.lists.values()):
            with open_dict(cfg):
                for number, (axis, position) in enumerate(zip(self.axes, self._swept)):
                    choice = axis.choices.index(combo[position])
                    if current[number] != choice:
                        self._set_axis(cfg, axis.changes[choice], paths[number])
                        current[number] = choice
            yield list(combo), cfg

    def _set_axis(self, cfg: DictConfig, changes: dict[tuple, object], paths: set) -> None:
        """Give every key an axis can change its value under ``changes`` (else the base's)."""
        for path in sorted(paths, key=len, reverse=True):  # deletions: leaves first
            value = changes[path] if path in changes else self._base_value(path)
            if value is _DELETED:
                self._delete(cfg, path)
        for path in sorted(paths, key=len):
            value = changes[path] if path in changes else self._base_value(path)
            if value is _DELETED:
                continue
            parent = cfg
            for key in path[:-1]:
                if not isinstance(parent.get(key), DictConfig):
                    parent[key] = {}
                parent = parent[key]
            parent[path[-1]] = copy.deepcopy(value)

    def _delete(self, cfg: DictConfig, path: tuple) -> None:
        """Remove ``path``, and the folders it leaves empty that the base does not have."""
        chain = [cfg]
        for key in path[:-1]:
            node = chain[-1].get(key)
            if not isinstance(node, DictConfig):
                return
            chain.append(node)
        chain[-1].pop(path[-1], None)
        for depth in range(len(path) - 1, 0, -1):
            if len(chain[depth]) == 0 and self._base_value(path[:depth]) is _DELETED:
                chain[depth - 1].pop(path[depth - 1], None)

    def _base_value(self, path: tuple):
        node = self.base
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return _DELETED
            node = node[key]
        return node

    def config_of(self, combo) -> DictConfig:
        """The config of one combination (a list in ``sweep_lists`` order), a new object."""
        changes = [axis.changes[axis.choices.index(combo[position])]
                   for axis, position in zip(self.axes, self._swept)]
        if any(_overlap(a, b) for a, b in itertools.combinations(changes, 2)):
            data = _container(self.compose(list(combo)))  # two axes change one key
        else:
            merged: dict[tuple, object] = {}
            for change in changes:
                merged.update(change)
            data = _apply(self.base, merged)
        cfg = OmegaConf.create(data)
        OmegaConf.set_struct(cfg, True)
        return cfg


def detached(cfg: DictConfig) -> DictConfig:
    """A copy of a config yielded by ``SweepExpander`` that later steps leave alone."""
    copied = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(copied, True)
    return copied


def group_checker(config_loader) -> Callable[[str], bool]:
    """``key -> is a config group`` from a Hydra config loader's repository."""
    repository = getattr(config_loader, "repository", None)
    if repository is None:
        return lambda key: True  # unknown: compose every choice (always exact)
    return lambda key: bool(repository.group_exists(key.lstrip("+~")))
