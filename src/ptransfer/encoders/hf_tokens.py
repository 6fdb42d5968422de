"""Tokens of transformers encoders: the tokenizer, each family's input convention, and
which positions of the output are residues.

The tokenizer is ``transformers.AutoTokenizer``'s (never ``trust_remote_code``), from one of:

- ``model.tokenizer.class`` (+ ``vocab``, ``kwargs``): built from the config alone, no files
  (hub ESM-2, ESM C, AntiBERTy: small fixed vocabularies whose ids are baked into the weights);
  the vocabulary is written as ``vocab.txt`` beside a ``tokenizer_config.json`` naming the class
  in a temporary folder that ``AutoTokenizer.from_pretrained`` reads;
- ``model.tokenizer.path``: a folder of tokenizer files;
- else the tokenizer files beside the weights (``model.weights`` folder, installed package or
  hub snapshot; ``encoders.hf_weights``), for every checkpoint and ablation alike.

The input convention (``model.tokens``) is what each model card does to a sequence before
tokenizing: ``separator`` between residues (ProtBert, ProtT5, AntiBERTy: a space),
``replace`` (ProtBert, ProtT5: rare residues U Z O B read as X), ``unknown`` (residues the
vocabulary lacks but the model's own tokenizer passes as its unknown token: AntiBERTy's 20
residues), ``no_pre_tokenizer`` (Ankh: its ``tokenizer.json`` has no pre-tokenizer, but
transformers 5's T5 tokenizer class installs a SentencePiece word marker that Ankh's
vocabulary lacks, which puts an unknown token before every sequence; this removes it again,
so the sequence reaches the Unigram model as one raw string, as in Ankh's own file).

Residues in the output are found by the tokenizer's own special-tokens mask (not by counting
positions): the non-special, non-padding tokens of a row must be exactly one per residue,
else the batch is refused naming the sequence (a wrong convention shows up here, not as
silently shifted features).
"""

from __future__ import annotations

import importlib.util
import json
import string
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ptransfer.encoders.weights import WeightsFileError

CANONICAL = "ACDEFGHIKLMNPQRSTVWY"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model")
TOKENS_KEY = "model.tokens"
TOKENIZER_KEY = "model.tokenizer"


@dataclass(frozen=True)
class InputConvention:
    """How a model card turns a sequence into tokenizer input (``model.tokens``)."""

    separator: str = ""
    replace: Mapping[str, str] = field(default_factory=dict)
    unknown: str = ""
    no_pre_tokenizer: bool = False

    @classmethod
    def from_config(cls, config: Mapping | None) -> InputConvention:
        config = dict(config or {})
        unknown_keys = set(config) - {"separator", "replace", "unknown", "no_pre_tokenizer"}
        if unknown_keys:
            raise ValueError(f"{TOKENS_KEY} has unknown key(s) {sorted(unknown_keys)}; known: "
                             "separator, replace, unknown, no_pre_tokenizer")
        replace = dict(config.get("replace") or {})
        bad = {k: v for k, v in replace.items() if len(str(k)) != 1 or len(str(v)) != 1}
        if bad:
            raise ValueError(f"{TOKENS_KEY}.replace maps single residues to single residues, "
                             f"got {bad}")
        return cls(str(config.get("separator") or ""), replace,
                   str(config.get("unknown") or ""), bool(config.get("no_pre_tokenizer")))

    def text(self, sequence: str) -> str:
        """The tokenizer input for ``sequence`` (replacements, then separators)."""
        if self.replace:
            sequence = sequence.translate(str.maketrans(dict(self.replace)))
        return self.separator.join(sequence) if self.separator else sequence


def load_tokenizer(spec: Mapping | None, convention: InputConvention,
                   files: Callable[[], Path]):
    """The tokenizer of ``spec`` (``model.tokenizer``), else of the folder ``files()`` returns."""
    from transformers import AutoTokenizer

    spec = dict(spec or {})
    kwargs = dict(spec.get("kwargs") or {})
    with tempfile.TemporaryDirectory(prefix="ptransfer_tokenizer_") as scratch:
        if spec.get("class"):
            folder = _materialise(spec, Path(scratch))
        elif spec.get("path"):
            folder = check_tokenizer_dir(Path(str(spec["path"])).expanduser(),
                                         f"{TOKENIZER_KEY}.path")
        else:
            folder = files()
        _check_sentencepiece(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False,
                                                      **kwargs)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise WeightsFileError(f"{folder}: AutoTokenizer cannot read a tokenizer from it: "
                                   f"{error}") from error
    if convention.no_pre_tokenizer:
        if not getattr(tokenizer, "is_fast", False):
            raise WeightsFileError(f"{folder}: {TOKENS_KEY}.no_pre_tokenizer=true needs a fast "
                                   f"tokenizer (tokenizer.json)")
        tokenizer.backend_tokenizer.pre_tokenizer = None
    return tokenizer


def _check_sentencepiece(folder: Path) -> None:
    """A SentencePiece-only tokenizer (ProtT5's ``spiece.model``) needs two more packages;
    without them transformers falls back to a tiktoken reader with a misleading error."""
    sentencepiece_only = ((folder / "spiece.model").is_file()
                          and not (folder / "tokenizer.json").is_file())
    if sentencepiece_only and not all(map(_installed, ("sentencepiece", "google.protobuf"))):
        raise WeightsFileError(
            f"{folder}: the tokenizer is a SentencePiece model (spiece.model, no "
            f"tokenizer.json); reading it needs `pip install sentencepiece protobuf`")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package (google for google.protobuf)
        return False


def _materialise(spec: Mapping, folder: Path) -> Path:
    """Write the tokenizer files ``spec`` describes (class, vocabulary) into ``folder``."""
    config = {"tokenizer_class": str(spec["class"]), **dict(spec.get("kwargs") or {})}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if spec.get("vocab"):
        (folder / "vocab.txt").write_text("\n".join(map(str, spec["vocab"])) + "\n")
    return folder


def check_tokenizer_dir(folder: Path, key: str) -> Path:
    """``folder`` if it holds tokenizer files, else an error saying how to provide them."""
    if not folder.is_dir():
        raise WeightsFileError(f"{key}={folder}: no such directory (expected tokenizer files)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise WeightsFileError(
            f"{key}={folder}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the "
            f"tokenizer beside the model (tokenizer.save_pretrained) or set "
            f"{TOKENIZER_KEY}.path=/dir")
    return folder


def residue_alphabet(tokenizer, convention: InputConvention, name: str) -> str:
    """Letters the tokenizer encodes as one residue token (plus ``convention.unknown``).

    A letter counts when its tokenizer input (after the convention's replacements) gives
    exactly one non-special token that is not the unknown token. Raises ``ValueError`` when
    a standard residue fails: the tokenizer is misconfigured (lower-casing, word markers).
    """
    letters = string.ascii_uppercase
    encoded = tokenizer([convention.text(c) for c in letters], return_special_tokens_mask=True)
    unk = tokenizer.unk_token_id
    alphabet = set(convention.unknown)
    for letter, ids, special in zip(letters, encoded["input_ids"],
                                    encoded["special_tokens_mask"]):
        residue = [i for i, s in zip(ids, special) if not s]
        if len(residue) == 1 and residue[0] != unk:
            alphabet.add(letter)
    missing = sorted(set(CANONICAL) - alphabet)
    if missing:
        raise ValueError(
            f"model={name}: its tokenizer does not encode the standard residue(s) "
            f"{''.join(missing)} as one known token each (lower-cased, split or unknown); "
            f"check {TOKENIZER_KEY}.kwargs (e.g. do_lower_case: false) and {TOKENS_KEY}")
    return "".join(sorted(alphabet))


@dataclass
class TokenBatch:
    """A tokenized batch: model inputs and where each residue sits.

    ids, attention_mask: B x S; positions: B x T, the token index of residue j of row i
    (T = longest sequence; entries past a row's length repeat its last residue).
    """

    ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor


def encode(tokenizer, convention: InputConvention, sequences: list[str],
           name: str) -> TokenBatch:
    """Tokenize ``sequences`` (right-padded) and locate their residues by the special-tokens mask."""
    encoded = tokenizer([convention.text(s) for s in sequences], padding=True,
                        return_special_tokens_mask=True, return_token_type_ids=False,
                        return_tensors="pt")
    mask = encoded["attention_mask"]
    residue = (encoded["special_tokens_mask"] == 0) & (mask == 1)  # B x S
    counts = residue.sum(dim=1)
    lengths = torch.tensor([len(s) for s in sequences])
    wrong = torch.nonzero(counts != lengths).flatten()
    if len(wrong):
        i = int(wrong[0])
        raise ValueError(
            f"model={name}: the tokenizer made {int(counts[i])} residue tokens for a sequence "
            f"of {len(sequences[i])} residues ({sequences[i][:30]}...); every residue must be "
            f"one token: check {TOKENS_KEY} (separator, no_pre_tokenizer)")
    # Stable sort puts each row's residue tokens first, in order: B x S -> first T columns.
    order = torch.sort((~residue).to(torch.int8), dim=1, stable=True).indices
    width = int(lengths.max())
    positions = order[:, :width]
    filler = positions.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1))
    positions = torch.where(torch.arange(width) < lengths.unsqueeze(1), positions, filler)
    return TokenBatch(encoded["input_ids"], mask, positions)


def residue_features(hidden_states: tuple[torch.Tensor, ...],
                     positions: torch.Tensor) -> torch.Tensor:
    """n_layers tensors B x S x D -> n_layers x B x T x D at ``positions`` (B x T)."""
    positions = positions.to(hidden_states[0].device)
    rows = torch.arange(positions.shape[0], device=positions.device).unsqueeze(1)
    return torch.stack([h[rows, positions] for h in hidden_states])
