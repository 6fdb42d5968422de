"""Real pretrained weights: AntiBERTy (antiberty==0.1.3 on PyPI ships a Hugging Face BERT folder,
26M parameters, masked LM on 558M antibody sequences). ``.ci/run`` installs it with --no-deps;
without it these tests skip, saying how to install it.

- ``model=antiberty`` reads every backbone tensor of the package's file unchanged;
- its features equal a plain ``AutoModel`` forward (the package's own vocab.txt read by
  ``BertTokenizer``, residues separated by spaces as AntiBERTy's runner does), for antibody
  chains and for non-antibody proteins, one at a time and batched;
- pretrained features differ from random-init ones; a full cell runs end to end.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import check, ptransfer
from omegaconf import OmegaConf

from ptransfer.encoders.base import CheckpointRef

SPEC = importlib.util.find_spec("antiberty")
pytestmark = pytest.mark.skipif(
    SPEC is None, reason="real weights absent: pip install --no-deps antiberty==0.1.3")
CONF = Path(__file__).resolve().parents[1] / "conf" / "model" / "antiberty.yaml"
SEQUENCES = {
    # trastuzumab variable domains (heavy, light): antibodies, AntiBERTy's training domain
    "heavy": "EVQLVESGGGLVQPGGSLRLSCAASGFNIKDTYIHWVRQAPGKGLEWVARIYPTNGYTRYADSVKGRFTISADTSKNTA"
             "YLQMNSLRAEDTAVYYCSRWGGDGFYAMDYWGQGTLVTVSS",
    "light": "DIQMTQSPSSLSASVGDRVTITCRASQDVNTAVAWYQQKPGKAPKLLIYSASFLYSGVPSRFSGSRSGTDFTLTISSLQP"
             "EDFATYYCQQHYTTPPTFGQGTKVEIK",
    # not antibodies: the GB1 domain (FLIP's landscape) and human ubiquitin
    "gb1": "MQYKLILNGKTLKGETTTEAVDAATAEKVFKQYANDNGVDGEWTYDDATKTFTVTE",
    "ubiquitin": "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG",
    "with_x": "MKTAYIAKXRQISFVKSHF",  # X: not in the vocabulary, [UNK] as in AntiBERTy's runner
}


def package_dir() -> Path:
    return Path(list(SPEC.submodule_search_locations)[0]) / "trained_models"


def antiberty(ablation: str = "pretrained", seed: int = 0):
    encoder = hydra.utils.instantiate(OmegaConf.load(CONF), _convert_="all")
    return encoder.load(CheckpointRef(), ablation, seed)


@pytest.fixture(scope="module")
def pretrained():
    return antiberty()


@pytest.fixture(scope="module")
def plain():
    """The plain transformers path: AutoModel on the package folder, its vocab.txt."""
    from transformers import AutoModel, BertTokenizer

    model = AutoModel.from_pretrained(str(package_dir() / "AntiBERTy_md_smooth")).eval()
    tokenizer = BertTokenizer.from_pretrained(str(package_dir()), do_lower_case=False)
    return model, tokenizer


def plain_forward(plain, sequence: str) -> torch.Tensor:
    model, tokenizer = plain
    inputs = tokenizer(" ".join(sequence), return_tensors="pt")
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True).hidden_states
    return torch.stack([h[0, 1:-1] for h in states])  # [CLS] ... [SEP] sliced off


def test_config_vocabulary_is_the_packages(pretrained):
    lines = (package_dir() / "vocab.txt").read_text().split()
    assert OmegaConf.load(CONF).tokenizer.vocab == lines
    assert pretrained.residue_alphabet() == "".join(sorted("ACDEFGHIKLMNPQRSTVWY" + "XBZJUO"))


def test_every_backbone_tensor_is_the_files(pretrained):
    path = package_dir() / "AntiBERTy_md_smooth" / "pytorch_model.bin"
    stored = torch.load(path, map_location="cpu", weights_only=True)
    params = dict(pretrained.module_.named_parameters())
    backbone = {k.removeprefix("bert."): v for k, v in stored.items() if k.startswith("bert.")
                and not k.startswith("bert.pooler")}
    # 8 blocks x 16 tensors + 5 embedding tensors; the file adds the position_ids buffer.
    assert len(params) == 8 * 16 + 5 and set(backbone) - set(params) <= {"embeddings.position_ids"}
    for key, value in params.items():
        assert torch.equal(value.detach(), backbone[key]), key
    assert pretrained.n_params == sum(p.numel() for p in pretrained.module_.parameters())


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_features_equal_a_plain_automodel_forward(pretrained, plain, name):
    sequence = SEQUENCES[name]
    found = pretrained.embed([sequence])[:, 0]
    expected = plain_forward(plain, sequence)
    assert found.shape == expected.shape == (9, len(sequence), 512)
    torch.testing.assert_close(found, expected, atol=1e-5, rtol=0)


def test_batched_features_equal_one_at_a_time(pretrained, plain):
    sequences = list(SEQUENCES.values())
    batch = pretrained.embed(sequences)
    for i, sequence in enumerate(sequences):
        torch.testing.assert_close(batch[:, i, : len(sequence)], plain_forward(plain, sequence),
                                   atol=1e-5, rtol=0)


def test_pretrained_features_differ_from_random_init_and_stat_transfer(pretrained):
    sequence = SEQUENCES["heavy"]
    real = pretrained.embed([sequence])[-1, 0]
    for ablation in ("random_init", "stat_transfer"):
        ablated = antiberty(ablation, seed=1).embed([sequence])[-1, 0]
        cosine = torch.nn.functional.cosine_similarity(real, ablated, dim=-1).mean()
        assert cosine < 0.5, ablation
    # The pretrained model tells an antibody from ubiquitin; the layers are not all alike.
    layers = pretrained.embed([sequence])[:, 0].mean(dim=1)  # 9 x 512
    assert torch.nn.functional.cosine_similarity(layers[0], layers[-1], dim=0) < 0.9


def test_a_full_cell_runs_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    base = SEQUENCES["heavy"]
    rows = []
    for i in range(60):  # point mutants of the heavy chain; target: their hydrophobic count
        chars = list(base)
        for position in rng.choice(len(base), size=3, replace=False):
            chars[position] = "ACDEFGHIKLMNPQRSTVWY"[rng.integers(20)]
        sequence = "".join(chars)
        split = "train" if i < 40 else ("val" if i < 50 else "test")
        rows.append((sequence, sum(c in "AILMFVW" for c in sequence), split))
    pd.DataFrame(rows, columns=["sequence", "target", "set"]).drop_duplicates(
        "sequence").to_csv(tmp_path / "mutants.csv", index=False)
    out = check(ptransfer("run", "task=csv", f"task.path={tmp_path / 'mutants.csv'}",
                          "task.kind=regression", "model=antiberty", "results_dir=res",
                          cwd=tmp_path, timeout=900))
    result = pd.concat(pd.read_csv(p) for p in (tmp_path / "res").rglob("rows.csv"))
    assert set(result.model) == {"antiberty"} and set(result.family) == {"antiberty"}
    assert sorted(result.layer.unique()) == list(range(9)) and set(result.n_layers) == {9}
    assert set(result.n_params) == {25_496_064}
    test = result[(result.eval_set == "test") & (result.metric == "spearman")]
    assert test.value.notna().all() and result.best_layer.sum() > 0
    assert list((tmp_path / "res").rglob("predictions.parquet")) and "spearman" in out
