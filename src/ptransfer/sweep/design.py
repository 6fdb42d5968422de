"""The design of a study: which swept combinations are cells.

A sweep is a cartesian product of its axes; the study is not. ``excluded_reason`` names why a
combination is no cell of the design (``grid.*`` rules in conf/config.yaml); the sweeper,
``plan`` and a re-run's done check all apply it.
"""

from __future__ import annotations

from omegaconf import DictConfig


def excluded_reason(cfg: DictConfig) -> str | None:
    """Why a swept combination is not a cell of the design (None: it is one).

    A sweep is a cartesian product; the study is not: one-hot has nothing to ablate, the
    pretrained and one-hot arms are deterministic and run once, neither one-hot nor a random
    init depends on the pretraining checkpoint, and a sweep on a machine without weights may
    skip pretrained PLMs.
    """
    rules = cfg.grid
    family = cfg.model.get("family", "")
    deterministic = cfg.ablation.name == "pretrained"
    if family == "onehot" and cfg.ablation.name != "pretrained":
        return "one-hot has no weights to ablate (runs in the pretrained arm only)"
    if str(cfg.checkpoint) != "final" and (family == "onehot" or cfg.ablation.name == "random_init"):
        return f"{family if family == 'onehot' else 'random_init'} does not depend on the " \
               "pretraining checkpoint (runs at checkpoint=final only)"
    if deterministic and int(cfg.seed) != int(rules.deterministic_seed):
        return f"the {cfg.ablation.name} arm runs once, at seed {rules.deterministic_seed}"
    if rules.skip_pretrained_plm and deterministic and family != "onehot":
        return "pretrained PLM skipped (grid.skip_pretrained_plm=true)"
    return None
