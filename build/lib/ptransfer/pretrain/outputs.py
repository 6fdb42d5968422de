"""What a pretraining run leaves for the grid: ``manifest.csv`` and a ``model.yaml`` config.

``model.yaml`` is a conf/model config listing every checkpoint saved so far, so the grid's
checkpoint axis sweeps the series with ``checkpoint=step<N>``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

MANIFEST_COLUMNS = [
    "step", "tokens_seen", "train_loss", "val_loss", "val_perplexity", "path", "seconds",
]

# Encoder classes the grid instantiates for each family (model config ``_target_``).
ENCODER_TARGETS = {
    "esm2": "ptransfer.encoders.esm.EsmEncoder",
    "carp": "ptransfer.encoders.carp.CarpEncoder",
}


def write_manifest(rows: list[dict], path: Path) -> None:
    frame = pd.DataFrame(sorted(rows, key=lambda r: r["step"]), columns=MANIFEST_COLUMNS)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def model_config(trainer) -> dict:
    """A conf/model config for the grid: the architecture and every checkpoint saved so far.

    ``weights`` is the final checkpoint (``checkpoint=final``); earlier checkpoints are the
    ``step<N>`` entries of ``checkpoints``, and ``final`` there carries the final step.
    """
    adapter, out = trainer.adapter, trainer.out_dir
    saved = sorted(r["step"] for r in trainer.progress.manifest)
    checkpoints = {f"step{s}": {"path": str(out / adapter.file_name(s)), "step": s}
                   for s in saved if s != trainer.max_steps}
    if trainer.max_steps in saved:
        checkpoints["final"] = {"path": str(out / adapter.file_name(trainer.max_steps)),
                                "step": trainer.max_steps}
    arch = adapter.constructor_args()
    n_blocks, dim = (int(arch[k]) for k in adapter.SHAPE_KEYS)
    return {"_target_": ENCODER_TARGETS[adapter.family], "name": str(trainer.arch["name"]),
            "family": adapter.family, "n_blocks": n_blocks, "dim": dim,
            "n_params": trainer.n_params, "max_len": int(trainer.cfg["data"]["max_len"]),
            "arch": arch, "weights": str(out / adapter.file_name(trainer.max_steps)),
            "checkpoints": checkpoints}


def write_model_config(trainer, path: Path) -> None:
    p = trainer.progress
    header = (f"# written by `ptransfer pretrain` at step {p.step} of {trainer.max_steps}; "
              "copy to conf/model/<name>.yaml to sweep its checkpoints\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + OmegaConf.to_yaml(OmegaConf.create(model_config(trainer))))
    tmp.replace(path)
