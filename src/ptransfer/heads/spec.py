"""The head a cell asks for: the ``head`` config node as plain values.

``name`` is the probe to use (``auto`` picks one from the task: ``heads.rules``); each probe
the config defines is a mapping with its ``_target_`` estimator and that estimator's own
parameters (grids, learning rate, ...). The cell builds one :class:`HeadSpec` at its door
(``cell.spec.cell_spec``); the heads never read the Hydra config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class HeadSpec:
    """``config``: the resolved ``head`` node (``name`` plus one mapping per probe)."""

    config: dict

    @classmethod
    def from_mapping(cls, values: Mapping) -> HeadSpec:
        if "name" not in values:
            raise ValueError("config key 'head.name' is required (a probe name or auto)")
        return cls(dict(values))

    @property
    def name(self) -> str:
        return str(self.config["name"])

    def probes(self) -> list[str]:
        """The probes this config defines (each a mapping with a ``_target_``)."""
        return sorted(k for k, v in self.config.items()
                      if isinstance(v, Mapping) and "_target_" in v)

    def probe_config(self, name: str) -> dict:
        """``head.<name>`` as plain keyword arguments (``_target_`` kept); null values dropped.

        A grid left null means "the estimator's default grid", so it is not passed at all.
        """
        node = self.config.get(name)
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ValueError(f"head={name}: no probe config head.{name}._target_ "
                             f"(known: {self.probes()})")
        return {k: v for k, v in node.items() if v is not None}
