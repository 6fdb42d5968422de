"""Per-residue probes on every layer: the streaming path against a one-shot fit, and the
cached (linear) path, on a tiny ESM-2 and a residue task whose labels follow the residues."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tiny_models import model_config

from ptransfer.embed.features import memory_features
from ptransfer.embed.settings import ExtractSettings
from ptransfer.encoders.base import CheckpointRef
from ptransfer.heads import StreamingRidgeClassifier
from ptransfer.heads.fit_layers import fit_layer, labelled, make_probe
from ptransfer.heads.fit_streaming import fit_streaming
from ptransfer.heads.spec import HeadSpec
from ptransfer.tasks.base import IGNORE, Split, Task

EXTRACT = ExtractSettings(toks_per_batch=512, progress=False)
HEAD = HeadSpec.from_mapping(OmegaConf.to_container(OmegaConf.merge(
    OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "head" / "auto.yaml"),
    {"streaming": {"alphas": [1e-2, 1.0, 1e2]},
     "linear": {"weight_decays": [0.0, 1e-2], "lr": 1e-2, "batch_size": 256,
                "max_epochs": 30, "patience": 3}})))
HELIX, STRAND = set("AELMQKRH"), set("VIYFWT")


def _labels(seq: str, rng) -> np.ndarray:
    y = np.array([0 if a in HELIX else 1 if a in STRAND else 2 for a in seq])
    y[rng.random(len(seq)) < 0.1] = IGNORE  # "unresolved" residues: never fitted or scored
    return y


def _task(seed: int = 0) -> Task:
    rng = np.random.default_rng(seed)
    aa = np.array(list("ACDEFGHIKLMNPQRSTVWY"))

    def split(n):
        seqs = ["".join(rng.choice(aa, size=rng.integers(15, 40))) for _ in range(n)]
        return Split(seqs, [_labels(s, rng) for s in seqs])

    return Task("toy_ss", "residue", "classification",
                {"train": split(60), "val": split(20), "test": split(20), "other": split(10)},
                dataset="toy", metric="accuracy", classes=["H", "E", "C"])


@pytest.fixture(scope="module")
def encoder():
    enc = instantiate(model_config("esm2"), _convert_="all")
    return enc.load(CheckpointRef(), ablation="random_init", seed=0)


def test_streaming_equals_one_shot_fit_on_cached_features(encoder):
    task = _task()
    fits = fit_streaming(encoder, task, HEAD, EXTRACT)
    assert [f.layer for f in fits] == list(range(encoder.n_layers))
    feats = memory_features(encoder, task, EXTRACT)
    for fit in fits:
        X, y = labelled(feats.get(fit.layer, "train"), task.splits["train"].flat_targets(),
                        "residue")
        probe = StreamingRidgeClassifier(alphas=(fit.hparams["alpha"],), n_classes=3)
        probe.partial_fit(X, y).finalize().select(0)
        for eval_set in ("val", "test", "other"):
            Xe, ye = labelled(feats.get(fit.layer, eval_set),
                              task.splits[eval_set].flat_targets(), "residue")
            expected = float((probe.predict(Xe) == ye).mean())
            assert fit.scores[eval_set]["accuracy"] == pytest.approx(expected, abs=1e-12)
            assert fit.n_eval[eval_set] == int((task.splits[eval_set].flat_targets() >= 0).sum())


def test_linear_probe_learns_residue_identity_at_layer_0(encoder):
    # Layer 0 is the token embedding: the label is a function of the residue, so a linear
    # probe there must be near perfect; the ignored residues are never counted.
    task = _task(1)
    feats = memory_features(encoder, task, EXTRACT)
    probe = make_probe("linear", HEAD, task, seed=0, device="cpu")
    fit = fit_layer(probe, 0, task, lambda split: feats.get(0, split))
    assert fit.scores["test"]["accuracy"] > 0.95
    assert set(fit.hparams) == {"weight_decay", "epochs"}
    assert fit.n_train == int((task.splits["train"].flat_targets() >= 0).sum())


def test_the_two_modes_rank_layer_0_alike(encoder):
    task = _task(2)
    streaming = fit_streaming(encoder, task, HEAD, EXTRACT)
    assert streaming[0].scores["test"]["accuracy"] > 0.95
