"""A cell's probes: features of every layer (from the store, in memory, or streamed), one
probe fitted per layer with hyper-parameters chosen on validation; and the same layers with
the layer and hyper-parameters chosen by cross-validation (``selection``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ptransfer.cell.key import encoder_identity
from ptransfer.cell.spec import CellSpec

if TYPE_CHECKING:
    from ptransfer.encoders.base import Encoder
    from ptransfer.heads.fit_layers import LayerFit
    from ptransfer.tasks.base import Task

log = logging.getLogger(__name__)


def layer_fits(spec: CellSpec, task: Task, encoder: Encoder, head: str,
               device: str) -> list[LayerFit]:
    """One fitted probe per layer of ``encoder`` on ``task`` (probe ``head``)."""
    from ptransfer.embed.extract import check_length_policy
    from ptransfer.heads.fit_layers import fit_layer, make_probe
    from ptransfer.heads.fit_streaming import fit_streaming

    # One check for every path (store, in-memory, streaming): truncation must not misalign
    # per-residue labels.
    check_length_policy(encoder, task.all_sequences(), spec.extract.length_policy, task.level)
    if head == "streaming":
        return fit_streaming(encoder, task, spec.head, spec.extract)
    feats = _features(spec, task, encoder)
    fits = []
    for layer in range(feats.n_layers):
        probe = make_probe(head, spec.head, task, spec.seed, device)
        fits.append(fit_layer(probe, layer, task, lambda split, _l=layer: feats.get(_l, split)))
        log.info("layer %d/%d: %s", layer, feats.n_layers - 1, _brief(fits[-1], task))
    return fits


def _features(spec: CellSpec, task: Task, encoder: Encoder):
    """The layers' stored (or, for one-hot, in-memory) features of every split."""
    from ptransfer.embed.features import memory_features, store_features

    if encoder.family == "onehot":
        return memory_features(encoder, task, spec.extract)
    return store_features(encoder, task, encoder_identity(spec.encoder), spec.store_dir,
                          spec.extract, spec.commit_seconds)


def cv_layer_fits(spec: CellSpec, task: Task, encoder: Encoder, head: str,
                  device: str) -> tuple[list[LayerFit], int]:
    """(one fit per layer, the chosen layer) with the layer and every hyper-parameter chosen
    by k-fold cross-validation over train and validation (``heads.fit_cv``)."""
    from ptransfer.heads.fit_cv import fit_cv_layers
    from ptransfer.heads.fit_layers import make_probe

    feats = _features(spec, task, encoder)
    probe = make_probe(head, spec.head, task, spec.seed, device)
    fits, best = fit_cv_layers(probe, task, feats.get, feats.n_layers, spec.selection.folds,
                               spec.seed)
    log.info("cross-validated selection (%d folds over train + val): layer %d, %s",
             spec.selection.folds, best, fits[best].hparams)
    return fits, best


def _brief(fit: LayerFit, task: Task) -> str:
    parts = [f"{s} {task.metric}={v[task.metric]:.4f}" for s, v in fit.scores.items()]
    return ", ".join(parts) + f" {fit.hparams}"
