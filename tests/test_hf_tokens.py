"""HfEncoder tokens: each family's residue alphabet read from its tokenizer before any weights,
the input conventions (spaces, rare residues, Ankh's pre-tokenizer), and clear errors when a
tokenizer would silently mis-tokenize."""

from __future__ import annotations

import json
import re

import hydra
import pytest
from hf_models import HF_FAMILIES, hf_model_config, write_tokenizer
from omegaconf import OmegaConf

from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.hf_tokens import InputConvention, encode
from ptransfer.encoders.hf_weights import HfWeightsUnavailable
from ptransfer.encoders.weights import WeightsFileError

# family -> letters beyond the 20 standard residues that its convention accepts
EXTRA = {"hf_esm2": "BOUXZ", "esmc": "BOUXZ", "prot_bert": "BOUXZ", "prot_t5": "BOUXZ",
         "ankh": "BOUXZ", "antiberty": "BJOUXZ"}


def configured(family: str, tmp_path, **overrides):
    """The encoder as the cell instantiates it, with only tokenizer files beside it."""
    folder = write_tokenizer(family, tmp_path / family)
    config = hf_model_config(family, weights=str(folder), **overrides)
    return hydra.utils.instantiate(OmegaConf.create(config), _convert_="all")


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_alphabet_is_read_from_the_tokenizer_and_refuses_before_loading(family, tmp_path):
    encoder = configured(family, tmp_path)  # the folder has tokenizer files, no weights
    assert encoder.residue_alphabet() == "".join(sorted("ACDEFGHIKLMNPQRSTVWY" + EXTRA[family]))
    bad = "J" if "J" not in EXTRA[family] else "*"
    with pytest.raises(ValueError, match=rf"^mine\.csv row 4: residue {re.escape(repr(bad))} "
                                         rf"at position 3 is outside the alphabet of "
                                         rf"model={family}_tiny"):
        encoder.check_alphabet(["MKV", f"MK{bad}V"], {f"MK{bad}V": "mine.csv row 4"})
    with pytest.raises(HfWeightsUnavailable, match="no weights|missing"):
        encoder.load(CheckpointRef(), "pretrained", 0)  # there really are no weights


def test_rare_residues_follow_the_model_card(tmp_path):
    # ProtBert / ProtT5: U Z O B are read as X, so they get X's token.
    for family in ("prot_bert", "prot_t5"):
        encoder = configured(family, tmp_path)
        batch = encode(encoder.loaded_tokenizer(), encoder.convention, ["UZOBX"], family)
        assert len(set(batch.ids[0, batch.positions[0]].tolist())) == 1, family
    # AntiBERTy: X becomes [UNK], as its own runner's tokenizer does; M stays itself.
    antiberty = configured("antiberty", tmp_path)
    tokenizer = antiberty.loaded_tokenizer()
    batch = encode(tokenizer, antiberty.convention, ["MXM"], "antiberty")
    ids = batch.ids[0, batch.positions[0]].tolist()
    assert ids == [tokenizer.convert_tokens_to_ids("M"), tokenizer.unk_token_id, ids[0]]


def test_special_tokens_are_found_by_the_mask_not_by_position(tmp_path):
    # T5 appends </s> only, BERT wraps in [CLS] ... [SEP]: residue positions differ.
    t5 = configured("prot_t5", tmp_path)
    bert = configured("prot_bert", tmp_path)
    sequences = ["MKT", "WYWYW"]
    t5_batch = encode(t5.loaded_tokenizer(), t5.convention, sequences, "t5")
    bert_batch = encode(bert.loaded_tokenizer(), bert.convention, sequences, "bert")
    assert t5_batch.positions.tolist() == [[0, 1, 2, 2, 2], [0, 1, 2, 3, 4]]
    assert bert_batch.positions.tolist() == [[1, 2, 3, 3, 3], [1, 2, 3, 4, 5]]
    assert t5_batch.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]


def test_a_lower_casing_tokenizer_is_refused(tmp_path):
    # A BERT vocab.txt read with transformers' default do_lower_case=True maps every residue
    # to [UNK] (what AutoTokenizer does with AntiBERTy's bare vocab.txt).
    folder = write_tokenizer("prot_bert", tmp_path / "lower")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    config = hf_model_config("prot_bert", weights=str(folder),
                             tokenizer={"path": str(folder)})
    encoder = hydra.utils.instantiate(OmegaConf.create(config), _convert_="all")
    with pytest.raises(ValueError, match="standard residue.*ACDEFGHIKLMNPQRSTVWY.*do_lower_case"):
        encoder.residue_alphabet()


def test_ankh_without_its_pre_tokenizer_rule_is_refused(tmp_path):
    # transformers 5's T5Tokenizer prepends a word marker Ankh's vocabulary lacks.
    encoder = configured("ankh", tmp_path, tokens={})
    with pytest.raises(ValueError, match="model.tokens"):
        encoder.residue_alphabet()


def test_a_convention_that_merges_residues_is_refused_at_encoding(tmp_path):
    # ProtBert without its spaces: "MKT" is one word -> one [UNK] for three residues.
    encoder = configured("prot_bert", tmp_path, tokens={"replace": {"U": "X"}})
    assert "A" in encoder.residue_alphabet()  # single letters still look fine
    with pytest.raises(ValueError, match=r"made 1 residue tokens for a sequence of 3 residues"):
        encode(encoder.loaded_tokenizer(), encoder.convention, ["MKT"], "prot_bert")


def test_sentencepiece_only_tokenizer_says_what_to_install(tmp_path):
    (tmp_path / "spiece.model").write_bytes(b"\x00")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}')
    config = hf_model_config("prot_t5", weights=str(tmp_path))
    encoder = hydra.utils.instantiate(OmegaConf.create(config), _convert_="all")
    with pytest.raises(WeightsFileError, match="pip install sentencepiece protobuf"):
        encoder.residue_alphabet()


def test_a_folder_without_tokenizer_files_is_a_clear_error(tmp_path):
    config = hf_model_config("prot_bert", weights=str(tmp_path))
    encoder = hydra.utils.instantiate(OmegaConf.create(config), _convert_="all")
    with pytest.raises(WeightsFileError, match="no tokenizer files.*model.tokenizer.path"):
        encoder.residue_alphabet()


@pytest.mark.parametrize(("tokens", "message"), [
    ({"separatr": " "}, r"unknown key\(s\) \['separatr'\]"),
    ({"replace": {"UZ": "X"}}, "single residues to single residues"),
])
def test_bad_input_convention_names_the_key(tokens, message):
    with pytest.raises(ValueError, match=rf"model\.tokens.*{message}|{message}"):
        InputConvention.from_config(tokens)
