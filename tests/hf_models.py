"""Tiny transformers encoders of every HfEncoder family, saved as users get them.

Families (``HF_FAMILIES``) and their architecture: ``hf_esm2`` (EsmModel), ``esmc``
(EsmcModel), ``prot_bert`` and ``antiberty`` (BertModel), ``prot_t5`` and ``ankh``
(T5EncoderModel). Each tiny model is built from a config, perturbed "as if pretrained",
saved with ``save_pretrained`` beside real tokenizer files written here, the way each hub
repository ships them:

- ESM-2: ``vocab.txt`` = fair-esm's ESM-1b alphabet (``esm.data.Alphabet``), ``EsmTokenizer``;
- ESM C: ``EsmcTokenizer`` (transformers' own vocabulary) saved with ``save_pretrained``;
- ProtBert: ``vocab.txt`` (``[PAD] [UNK] [CLS] [SEP] [MASK]`` + residues) and a
  ``tokenizer_config.json`` with ``do_lower_case: false``;
- AntiBERTy: ``vocab.txt`` (special tokens + the 20 residues), read lower-case free;
- ProtT5: a SentencePiece-free fast T5 tokenizer (``tokenizer.json``: Unigram over
  ``▁A`` ... word-marked residues) saved by ``T5Tokenizer.save_pretrained``;
- Ankh: ``tokenizer.json`` written with the ``tokenizers`` library as Ankh's repository holds
  it: plain residues, no pre-tokenizer, ``</s>`` appended, class ``T5Tokenizer``.

``plain_features`` is the reference: a plain ``AutoModel``/``T5EncoderModel`` +
``AutoTokenizer`` forward on one sequence, the input written by the model card's rule, the
special tokens sliced off by hand (BERT/ESM: first and last; T5: the last).

Also: ``esm2_to_transformers`` (a fair-esm ``ESM2`` converted to ``EsmModel`` by mapping its
state dict, as transformers' conversion script does) and ``install_in_hf_cache`` (a folder as
the hub snapshot of a repo id).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from ptransfer.encoders.hf_families import build_module, hf_n_params, model_class
from ptransfer.encoders.hf_weights import repo_cache_dir

CONF_MODEL = Path(__file__).resolve().parents[1] / "conf" / "model"
RESIDUES = "LAGVSERTIDPKQNFYMHWCXBUZO"
_BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 512,
         "type_vocab_size": 2, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
TINY_HF_ARCH = {
    "hf_esm2": {
        "model_type": "esm", "vocab_size": 33, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 1026,
        "position_embedding_type": "rotary", "token_dropout": True, "mask_token_id": 32,
        "pad_token_id": 1, "emb_layer_norm_before": False, "layer_norm_eps": 1e-5,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    },
    "esmc": {
        "model_type": "esmc", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 96, "max_position_embeddings": 2048,
        "pad_token_id": 1, "mask_token_id": 32,
    },
    "prot_bert": {**_BERT, "vocab_size": 30},
    "antiberty": {**_BERT, "vocab_size": 25},
    "prot_t5": {
        "model_type": "t5", "vocab_size": 128, "d_model": 32, "d_kv": 8, "d_ff": 64,
        "num_heads": 4, "num_layers": 2, "relative_attention_num_buckets": 32,
        "feed_forward_proj": "relu", "dropout_rate": 0.0,
    },
    "ankh": {
        "model_type": "t5", "vocab_size": 144, "d_model": 32, "d_kv": 8, "d_ff": 48,
        "num_heads": 4, "num_layers": 2, "relative_attention_num_buckets": 64,
        "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu",
        "dropout_rate": 0.0, "tie_word_embeddings": False,
    },
}  # fmt: skip
HF_FAMILIES = tuple(TINY_HF_ARCH)
# The shipped config whose tokenizer, input convention and model kwargs each family uses.
SHIPPED = {"hf_esm2": "hf_esm2_t6_8M_UR50D", "esmc": "esmc_300m", "prot_bert": "prot_bert",
           "antiberty": "antiberty", "prot_t5": "prot_t5_xl_uniref50", "ankh": "ankh_base"}
TINY_HF_REPO = {f: f"tiny-org/{f}" for f in HF_FAMILIES}
# Where the features of a plain forward sit: (tokens before the residues, after them).
SPECIAL_SPAN = {"hf_esm2": (1, 1), "esmc": (1, 1), "prot_bert": (1, 1), "antiberty": (1, 1),
                "prot_t5": (0, 1), "ankh": (0, 1)}


def shipped(family: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF_MODEL / f"{SHIPPED[family]}.yaml"))


def tiny_kwargs(family: str) -> dict:
    return dict(shipped(family).get("model_kwargs") or {})


def hf_model_config(family: str, **overrides) -> dict:
    """A conf/model-style dict for the tiny ``family`` model (the shipped tokenizer rules)."""
    arch, real = TINY_HF_ARCH[family], shipped(family)
    config = {
        "_target_": "ptransfer.encoders.hf.HfEncoder",
        "name": f"{family}_tiny",
        "family": family,
        "n_blocks": arch.get("num_hidden_layers", arch.get("num_layers")),
        "dim": arch.get("hidden_size", arch.get("d_model")),
        "n_params": hf_n_params(arch, tiny_kwargs(family)),
        "max_len": 1022,
        "repo_id": TINY_HF_REPO[family],
        "revision": None,
        "arch": dict(arch),
        "model_kwargs": tiny_kwargs(family),
        "attn_implementation": "sdpa",
        "tokenizer": real.get("tokenizer") or {},
        "tokens": real.get("tokens") or {},
        "weights": None,
        "checkpoints": {},
    }
    config.update(overrides)
    return config


def build_hf(family: str, seed: int = 0) -> nn.Module:
    """A tiny transformers module with every parameter perturbed ("as if pretrained")."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build_module(TINY_HF_ARCH[family], tiny_kwargs(family))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return module.eval()


def _write_vocab(directory: Path, tokens: list[str], tokenizer_config: dict) -> None:
    (directory / "vocab.txt").write_text("\n".join(tokens) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))


def _write_t5_prot(directory: Path) -> None:
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + r, -1.0 - i / 100) for i, r in enumerate(RESIDUES)]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    T5Tokenizer(vocab=pieces, extra_ids=100).save_pretrained(str(directory))


def _write_ankh(directory: Path) -> None:
    from tokenizers import Tokenizer, models, processors

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(r, -1.0 - i / 100) for i, r in enumerate(RESIDUES)]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2))  # no pre-tokenizer, as Ankh's file
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "unk_token": "<unk>",
         "pad_token": "<pad>", "extra_ids": 100}))


def write_tokenizer(family: str, directory: Path) -> Path:
    """Real tokenizer files of ``family`` in ``directory`` (see the module docstring)."""
    import esm
    from transformers import EsmcTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if family == "hf_esm2":
        _write_vocab(directory, esm.data.Alphabet.from_architecture("ESM-1b").all_toks,
                     {"tokenizer_class": "EsmTokenizer"})
    elif family == "esmc":
        EsmcTokenizer().save_pretrained(str(directory))
    elif family == "prot_bert":
        _write_vocab(directory, specials + list("LAGVESIKRDTPNQFYMHCWXUBZO"),
                     {"tokenizer_class": "BertTokenizer", "do_lower_case": False})
    elif family == "antiberty":
        _write_vocab(directory, specials + list("ACDEFGHIKLMNPQRSTVWY"),
                     {"tokenizer_class": "BertTokenizer", "do_lower_case": False})
    elif family == "prot_t5":
        _write_t5_prot(directory)
    else:
        _write_ankh(directory)
    return directory


def write_pretrained(module: nn.Module, directory: Path, family: str | None = None) -> Path:
    """``save_pretrained`` into ``directory`` (+ the family's tokenizer files); returns it."""
    module.save_pretrained(str(directory))
    if family is not None:
        write_tokenizer(family, Path(directory))
    return Path(directory)


def card_input(family: str, sequence: str) -> str:
    """The model card's tokenizer input for ``sequence`` (written here, not by ptransfer)."""
    if family in ("prot_bert", "prot_t5"):
        return " ".join(re.sub(r"[UZOB]", "X", sequence))
    if family == "antiberty":
        return " ".join(sequence)
    return sequence


def plain_features(family: str, directory: Path, sequence: str) -> torch.Tensor:
    """n_layers x L x D: a plain transformers forward of ``sequence`` (the reference)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    if family == "ankh":  # the repository file's own pipeline, as Ankh's authors run it
        ids = Tokenizer.from_file(str(directory / "tokenizer.json")).encode(sequence).ids
    else:
        ids = AutoTokenizer.from_pretrained(str(directory))(card_input(family, sequence))[
            "input_ids"]
    module = model_class(TINY_HF_ARCH[family]).from_pretrained(str(directory)).eval()
    with torch.no_grad():
        states = module(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    before, after = SPECIAL_SPAN[family]
    return torch.stack([h[0, before: len(ids) - after] for h in states])


def esm2_to_transformers(module: nn.Module) -> nn.Module:
    """The transformers ``EsmModel`` holding the weights of fair-esm ``ESM2`` ``module``."""
    arch = dict(TINY_HF_ARCH["hf_esm2"], hidden_size=module.embed_dim,
                num_hidden_layers=module.num_layers, num_attention_heads=module.attention_heads,
                intermediate_size=4 * module.embed_dim)
    hf = build_module(arch, {"add_pooling_layer": False})
    state = {"embeddings.word_embeddings.weight": module.embed_tokens.weight}
    block = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
             "self_attn.v_proj": "attention.self.value",
             "self_attn.out_proj": "attention.output.dense",
             "self_attn_layer_norm": "attention.LayerNorm", "fc1": "intermediate.dense",
             "fc2": "output.dense", "final_layer_norm": "LayerNorm"}
    for i, layer in enumerate(module.layers):
        for source, target in block.items():
            sub = layer.get_submodule(source)
            for kind in ("weight", "bias"):
                state[f"encoder.layer.{i}.{target}.{kind}"] = getattr(sub, kind)
    for kind in ("weight", "bias"):
        state[f"encoder.emb_layer_norm_after.{kind}"] = getattr(module.emb_layer_norm_after, kind)
        state[f"contact_head.regression.{kind}"] = getattr(module.contact_head.regression, kind)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    learned = [k for k in missing if not k.endswith("inv_freq")]  # rotary buffers: not weights
    assert not learned and not unexpected, (learned, unexpected)
    return hf.eval()


def install_in_hf_cache(directory: Path, repo_id: str, commit: str = "0" * 40,
                        ref: str = "main") -> Path:
    """Copy a save_pretrained directory into the hub cache as ``repo_id``'s snapshot."""
    repo = repo_cache_dir(repo_id)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(directory, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot
