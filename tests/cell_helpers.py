"""Composing real cell configs in-process (Hydra's compose API) for tests that run cells."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tiny_models import model_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def cell_config(results: Path, *overrides: str, tiny: str | None = None):
    """The composed run config with ``results_dir=results``; ``tiny``: a tiny model family
    ("esm2", "carp") replacing ``model`` (random_init needs no weights)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"results_dir={results}", "extract.progress=false",
                                           *overrides])
    if tiny is not None:
        OmegaConf.set_struct(cfg, False)
        cfg.model = OmegaConf.create(model_config(tiny))
    return cfg
