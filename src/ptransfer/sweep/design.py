"""The design of a study: which swept combinations are cells.

A sweep is a cartesian product of its axes; the study is not. ``excluded_reason`` names why a
combination is no cell of the design (``grid.*`` rules in conf/config.yaml); the sweeper,
``plan`` and a re-run's done check all apply it.
"""

from __future__ import annotations

from omegaconf import DictConfig


def excluded_reason(cfg: DictConfig) -> str | None:
    """Why a swept combination is not a cell of the design (None: it is one).

    A sweep is a cartesian product; the study is not: one-hot has nothing to ablate or
    fine-tune, LoRA needs attention (not CARP), the pretrained frozen and one-hot arms are
    deterministic and run once (a fine-tune of pretrained weights runs at every seed),
    neither one-hot nor a random init depends on the pretraining checkpoint, and a sweep on a
    machine without weights may skip pretrained PLMs.
    """
    rules = cfg.grid
    family = cfg.model.get("family", "")
    tune = (cfg.get("tune") or {}).get("mode", "frozen")
    # a frozen pretrained probe is deterministic; a fine-tune of pretrained weights is not
    # (head, adapters, data order and dropout follow the seed): it runs at every seed
    deterministic = cfg.ablation.name == "pretrained" and tune == "frozen"
    if tune != "frozen":
        reason = _not_tunable(cfg, family)
        if reason:
            return reason
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


def _not_tunable(cfg: DictConfig, family: str) -> str | None:
    """Why this model cannot be fine-tuned as ``tune`` says (one-hot; LoRA without attention)."""
    from omegaconf import OmegaConf

    from ptransfer.tune.spec import TuneSpec
    from ptransfer.tune.targets import check_tunable

    arch = cfg.model.get("arch")
    try:
        check_tunable(TuneSpec(mode=str(cfg.tune.mode)), str(cfg.model.name), family,
                      OmegaConf.to_container(arch, resolve=True) if arch else None)
    except ValueError as err:
        return str(err)
    return None
