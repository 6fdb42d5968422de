"""The masked-LM task for both model families: its data, masking, batching and adapters.

Data: pretraining sequences come from FASTA files and/or tasks' training splits; every
sequence of every configured test set is removed (exact match, case-insensitive), and a
seeded 5 % is held out for the validation loss. Training examples are random crops of at
most ``data.max_len`` residues, in length-bucketed batches under a token budget.

One training loop (``ptransfer.pretrain``) serves ESM-2 and CARP; everything that differs
between the families lives in a small adapter here: how sequences become tokens (ESM adds
BOS/EOS, CARP does not), which token ids mean mask / padding / the 20 canonical residues,
how logits come out of the module, and the checkpoint format each package loads.

Masking is BERT's: 15 % of the real residues are selected; of those 80 % become the mask
token, 10 % a residue drawn uniformly from the 20 canonical amino acids, 10 % stay as they
are; the loss is the cross-entropy on selected positions only (``IGNORE_INDEX`` elsewhere).
"""

from __future__ import annotations

import hashlib
import logging
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

log = logging.getLogger(__name__)

CANONICAL = "ACDEFGHIKLMNPQRSTVWY"
# Letters both alphabets (ESM-1b and sequence-models' PROTEIN_ALPHABET) know as residues.
RESIDUES = frozenset(CANONICAL + "XBZUO")
IGNORE_INDEX = -100  # cross_entropy's default ignore_index: positions that carry no loss
TASK_CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "task"


@dataclass(frozen=True)
class MaskingRates:
    """Fraction of residues selected, and how the selected ones are corrupted."""

    select: float = 0.15
    to_mask: float = 0.8
    to_random: float = 0.1  # the rest (1 - to_mask - to_random) stays unchanged

    def __post_init__(self) -> None:
        if not 0.0 < self.select <= 1.0:
            raise ValueError(f"mlm.select must be in (0, 1], got {self.select}")
        if self.to_mask < 0 or self.to_random < 0 or self.to_mask + self.to_random > 1.0:
            raise ValueError(
                f"mlm.to_mask ({self.to_mask}) and mlm.to_random ({self.to_random}) must be "
                "non-negative and sum to at most 1"
            )


def mask_tokens(
    tokens: torch.Tensor,
    maskable: torch.Tensor,
    mask_idx: int,
    canonical_ids: torch.Tensor,
    rates: MaskingRates,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt a batch for masked-LM training.

    Args:
        tokens: B x T token ids (CPU, the generator's device).
        maskable: B x T bool, True on real residues (never BOS/EOS/padding).
        mask_idx: the family's mask token id.
        canonical_ids: 20 token ids of the canonical amino acids (random replacements).
        rates: selection and corruption fractions.
        generator: the only source of randomness, so a step's masking is reproducible.

    Returns:
        inputs: B x T corrupted token ids.
        targets: B x T original ids on selected positions, ``IGNORE_INDEX`` elsewhere.
    Every sequence with a residue gets at least one selected position, so no row (and no
    tiny batch) is without a loss term.
    """
    draw = torch.rand(tokens.shape, generator=generator)
    selected = (draw < rates.select) & maskable
    empty_rows = maskable.any(dim=1) & ~selected.any(dim=1)
    if empty_rows.any():
        # rows that drew nothing get one residue: the argmax of fresh noise over its residues
        noise = torch.rand(tokens.shape, generator=generator).masked_fill(~maskable, -1.0)
        forced = F.one_hot(noise.argmax(dim=1), tokens.shape[1]).bool()
        selected |= forced & empty_rows[:, None]
    action = torch.rand(tokens.shape, generator=generator)
    to_mask = selected & (action < rates.to_mask)
    to_random = selected & (action >= rates.to_mask) & (action < rates.to_mask + rates.to_random)
    pick = torch.randint(len(canonical_ids), tokens.shape, generator=generator)
    inputs = tokens.clone()
    inputs[to_mask] = mask_idx
    inputs[to_random] = canonical_ids[pick[to_random]]
    targets = torch.where(selected, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return inputs, targets


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over selected positions (mean or sum). logits B x T x V, targets B x T."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                           ignore_index=IGNORE_INDEX, reduction=reduction)


def crop(sequence: str, max_len: int, rng: np.random.Generator) -> str:
    """A random window of ``max_len`` residues (the sequence itself when it is short enough)."""
    if len(sequence) <= max_len:
        return sequence
    start = int(rng.integers(0, len(sequence) - max_len + 1))
    return sequence[start : start + max_len]


def token_budget_batches(
    lengths: np.ndarray,
    toks_per_batch: int,
    n_special: int,
    rng: np.random.Generator | None,
    max_batch_size: int | None = None,
) -> list[np.ndarray]:
    """Length-bucketed batches whose padded size stays within ``toks_per_batch``.

    Sequences are sorted by length (ties in random order), cut greedily into batches with
    ``n_sequences * (longest + n_special) <= toks_per_batch``, and the batch order is
    shuffled. ``rng=None`` keeps input order for ties and batches (evaluation).
    lengths: N residue counts. Returns index arrays into ``lengths``.
    """
    longest = int(lengths.max()) if len(lengths) else 0
    if longest + n_special > toks_per_batch:
        raise ValueError(
            f"toks_per_batch={toks_per_batch} cannot hold one sequence of {longest} residues "
            f"(+{n_special} special tokens): raise schedule.toks_per_batch or lower data.max_len"
        )
    order = np.arange(len(lengths)) if rng is None else rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
    batches, current = [], []
    for index in order:
        width = int(lengths[index]) + n_special  # sorted ascending: the newcomer is the longest
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (full or (len(current) + 1) * width > toks_per_batch):
            batches.append(np.array(current))
            current = []
        current.append(index)
    if current:
        batches.append(np.array(current))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


@dataclass
class PretrainData:
    """Pretraining sequences: ``train`` (whole; cropped anew each epoch), ``val`` (cropped once)."""

    train: list[str]
    val: list[str]
    n_removed: int  # unique candidates dropped because a test set holds them
    digest: str  # SHA-256 of train and val: a resumed run must see the same data


def read_fasta(path: str | Path) -> list[tuple[str, str]]:
    """(header, sequence) records of a FASTA file; sequences upper-cased and checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FASTA file {path} not found")
    records: list[tuple[str, list[str]]] = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if line.startswith(">"):
            records.append((line[1:].strip() or f"(line {line_no})", []))
        elif line and not records:
            raise ValueError(f"{path}:{line_no}: sequence line before the first '>' header")
        elif line:
            records[-1][1].append(line)
    if not records:
        raise ValueError(f"{path}: no FASTA records")
    return [(name, checked(''.join(chunks), f"{path} record {name!r}")) for name, chunks in records]


def checked(sequence: str, where: str) -> str:
    """The upper-cased sequence; an error naming ``where`` if it is empty or not protein."""
    sequence = sequence.strip().upper()
    if not sequence:
        raise ValueError(f"{where}: empty sequence")
    bad = sorted(set(sequence) - RESIDUES)
    if bad:
        raise ValueError(f"{where}: characters {bad} are not residues "
                         f"(allowed: {CANONICAL} and X, B, Z, U, O)")
    return sequence


def load_task(name: str, data_cfg: dict):
    """Instantiate ``conf/task/<name>.yaml`` (its ``root`` set to ``data.root``)."""
    import hydra

    conf_dir = Path(data_cfg.get("task_conf_dir") or TASK_CONF_DIR)
    path = conf_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in conf_dir.glob("*.yaml"))
        raise FileNotFoundError(f"data.tasks: no task config {path} (known: {known})")
    node = OmegaConf.load(path)
    if "root" in node:
        node.root = str(data_cfg["root"])
    try:
        return hydra.utils.instantiate(node, _convert_="all")
    except Exception as err:  # instantiate wraps loader errors; name the config at fault
        raise ValueError(f"data.tasks: task {name!r} ({path}) failed to load: {err}") from err


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str | Path) else list(value)


def gather_sequences(data_cfg: dict) -> tuple[list[str], dict[str, set[str]]]:
    """(candidate pretraining sequences, test-set name -> its sequences to exclude)."""
    candidates: list[str] = []
    test_sets: dict[str, set[str]] = {}
    for name in _as_list(data_cfg.get("tasks")) + _as_list(data_cfg.get("exclude_tasks")):
        task = load_task(name, data_cfg)
        for test in task.test_sets:
            test_sets[f"{name}/{test}"] = {s.upper() for s in task.splits[test].sequences}
        if name not in _as_list(data_cfg.get("tasks")):
            continue  # exclude_tasks: only their test sets matter
        for split in _as_list(data_cfg.get("splits")):
            if split not in task.splits:
                raise ValueError(f"data.splits: task {name!r} has no split {split!r} "
                                 f"(it has {sorted(task.splits)})")
            candidates += [checked(s, f"task {name} split {split} sequence {i}")
                           for i, s in enumerate(task.splits[split].sequences)]
    for path in _as_list(data_cfg.get("fasta")):
        candidates += [seq for _, seq in read_fasta(path)]
    for path in _as_list(data_cfg.get("exclude_fasta")):
        test_sets[str(path)] = {seq for _, seq in read_fasta(path)}
    if not candidates:
        raise ValueError("no pretraining sequences: set data.fasta and/or data.tasks")
    return candidates, test_sets


def load_pretrain_data(data_cfg: dict) -> PretrainData:
    """Unique candidates minus every test-set sequence, split into train and a seeded val."""
    candidates, test_sets = gather_sequences(data_cfg)
    unique = list(dict.fromkeys(candidates))
    excluded = set().union(*test_sets.values())
    kept = [s for s in unique if s not in excluded]
    per_set = ", ".join(f"{k}: {sum(s in v for s in unique)}" for k, v in test_sets.items())
    log.info("pretraining data: %d sequences, %d duplicates dropped, %d removed as test-set "
             "sequences (%s)", len(candidates), len(candidates) - len(unique),
             len(unique) - len(kept), per_set or "no test sets configured")
    fraction = float(data_cfg["val_fraction"])
    if not 0.0 < fraction < 1.0 or len(kept) < 2:
        raise ValueError(f"data.val_fraction={fraction} must be in (0, 1) and at least 2 "
                         f"sequences are needed ({len(kept)} left after exclusion)")
    rng = np.random.default_rng(int(data_cfg["split_seed"]))
    order = rng.permutation(len(kept))
    n_val = min(max(1, round(fraction * len(kept))), int(data_cfg["max_val_sequences"]),
                len(kept) - 1)
    val = [crop(kept[i], int(data_cfg["max_len"]), rng) for i in sorted(order[:n_val])]
    train = [kept[i] for i in sorted(order[n_val:])]
    digest = hashlib.sha256("\n".join(train + ["|"] + val).encode()).hexdigest()
    return PretrainData(train, val, len(unique) - len(kept), digest)


class EsmAdapter:
    """ESM-2 (fair-esm ``ESM2``) with the ESM-1b alphabet: BOS + residues + EOS, then padding."""

    family = "esm2"
    n_special = 2
    ARCH_KEYS = ("num_layers", "embed_dim", "attention_heads", "token_dropout")
    SHAPE_KEYS = ("num_layers", "embed_dim")  # -> model config n_blocks, dim

    def __init__(self, arch: dict) -> None:
        import esm

        self.arch = arch
        self.alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
        self.mask_idx = self.alphabet.mask_idx
        self.canonical_ids = torch.tensor([self.alphabet.get_idx(a) for a in CANONICAL])
        self._lookup = {a: self.alphabet.get_idx(a) for a in RESIDUES}

    def build(self) -> nn.Module:
        from esm.model.esm2 import ESM2

        return ESM2(alphabet=self.alphabet, **self.constructor_args())

    def constructor_args(self) -> dict:
        """``ESM2(...)`` arguments: the ``arch`` block of a conf/model ESM-2 config."""
        return _pick(self.arch, self.ARCH_KEYS)

    def tokenize(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens B x (L_max + 2), maskable B x (L_max + 2) (True on residues only)."""
        width = max(len(s) for s in sequences) + 2
        tokens = torch.full((len(sequences), width), self.alphabet.padding_idx, dtype=torch.long)
        maskable = torch.zeros(tokens.shape, dtype=torch.bool)
        for row, seq in enumerate(sequences):
            tokens[row, 0] = self.alphabet.cls_idx
            tokens[row, 1 : len(seq) + 1] = torch.tensor([self._lookup[a] for a in seq])
            tokens[row, len(seq) + 1] = self.alphabet.eos_idx
            maskable[row, 1 : len(seq) + 1] = True
        return tokens, maskable

    @staticmethod
    def logits(module: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return module(tokens)["logits"]  # B x T x V

    def file_name(self, step: int) -> str:
        # fair-esm's local loader dispatches on the file stem: it must start with "esm2"
        name = str(self.arch["name"])
        return f"{name if name.startswith('esm2') else 'esm2_' + name}_step{step}.pt"

    def save(self, module: nn.Module, path: Path, meta: dict) -> list[Path]:
        """fair-esm's ESM-2 format, plus the ``-contact-regression.pt`` its local loader reads.

        The contact head is not trained by the MLM loss: its regression weights are the
        initial ones, saved so that ``load_model_and_alphabet_local`` accepts the file.
        """
        regression = ("contact_head.regression.weight", "contact_head.regression.bias")
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        args = self.constructor_args()
        model_cfg = Namespace(  # the fields fair-esm's v2 loader reads
            encoder_layers=args["num_layers"],
            encoder_embed_dim=args["embed_dim"],
            encoder_attention_heads=args["attention_heads"],
            token_dropout=args["token_dropout"],
        )
        body = {"encoder." + k: v for k, v in state.items() if k not in regression}
        head = {k: state[k] for k in regression}
        regression_path = path.with_name(path.stem + "-contact-regression.pt")
        _atomic_save({"model": head}, regression_path)
        _atomic_save({"model": body, "cfg": {"model": model_cfg}, "ptransfer": meta}, path)
        return [path, regression_path]


class CarpAdapter:
    """CARP: sequence-models ``ByteNetLM`` wrapped in ``CARP``; no BOS/EOS, '#' mask, '-' pad."""

    family = "carp"
    n_special = 0
    ARCH_KEYS = ("d_embed", "d_model", "n_layers", "kernel_size", "r", "slim", "activation")
    SHAPE_KEYS = ("n_layers", "d_model")  # -> model config n_blocks, dim

    def __init__(self, arch: dict) -> None:
        from sequence_models.constants import MASK, PAD, PROTEIN_ALPHABET

        self.arch = arch
        name = str(arch.get("name"))
        # sequence-models dispatches on the saved 'model' name: it must contain 'carp' and must
        # not contain 'big' (read as a BiG-CARP checkpoint) or 'mif'
        self.model_name = name if "carp" in name else f"carp_{name}"
        if "big" in self.model_name or "mif" in self.model_name:
            raise ValueError(f"arch.name={name!r}: a CARP name must not contain 'big' or 'mif'")
        self.mask_idx = PROTEIN_ALPHABET.index(MASK)
        self.pad_idx = PROTEIN_ALPHABET.index(PAD)
        self.canonical_ids = torch.tensor([PROTEIN_ALPHABET.index(a) for a in CANONICAL])
        self._lookup = {a: PROTEIN_ALPHABET.index(a) for a in RESIDUES}
        self.n_tokens = len(PROTEIN_ALPHABET)

    def build(self) -> nn.Module:
        from sequence_models.convolutional import ByteNetLM
        from sequence_models.pretrained import CARP

        # the same constructor call as sequence_models.pretrained.load_carp
        a = self.constructor_args()
        net = ByteNetLM(
            self.n_tokens, a["d_embed"], a["d_model"], a["n_layers"], a["kernel_size"], a["r"],
            dropout=0.0, activation=a["activation"], causal=False, padding_idx=self.mask_idx,
            final_ln=True, slim=a["slim"],
        )
        return CARP(net, pad_idx=self.pad_idx)

    def constructor_args(self) -> dict:
        """The checkpoint fields ``load_carp`` builds from: a conf/model CARP ``arch`` block."""
        return _pick(self.arch, self.ARCH_KEYS)

    def tokenize(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens B x L_max, maskable B x L_max (True on residues only)."""
        width = max(len(s) for s in sequences)
        tokens = torch.full((len(sequences), width), self.pad_idx, dtype=torch.long)
        for row, seq in enumerate(sequences):
            tokens[row, : len(seq)] = torch.tensor([self._lookup[a] for a in seq])
        return tokens, tokens != self.pad_idx

    @staticmethod
    def logits(module: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return module(tokens, repr_layers=[], logits=True)["logits"]  # B x T x V

    def file_name(self, step: int) -> str:
        # sequence-models dispatches on the saved 'model' name, not on the file name
        return f"{self.arch['name']}_step{step}.pt"

    def save(self, module: nn.Module, path: Path, meta: dict) -> list[Path]:
        """The dict ``sequence_models.pretrained.load_carp`` reads."""
        data = {
            "model": self.model_name,
            **self.constructor_args(),
            "model_state_dict": {k: v.detach().cpu() for k, v in module.model.state_dict().items()},
            "ptransfer": meta,
        }
        _atomic_save(data, path)
        return [path]


ADAPTERS = {"esm2": EsmAdapter, "carp": CarpAdapter}


def make_adapter(arch: dict) -> EsmAdapter | CarpAdapter:
    """The adapter for ``arch['family']`` (``esm2`` or ``carp``)."""
    family = arch.get("family")
    if family not in ADAPTERS:
        raise ValueError(f"arch.family={family!r}: expected one of {sorted(ADAPTERS)}")
    return ADAPTERS[family](arch)


def _pick(arch: dict, keys: tuple[str, ...]) -> dict:
    missing = [k for k in keys if k not in arch]
    if missing:
        raise ValueError(f"arch ({arch.get('family')}) lacks key(s) {missing}")
    return {k: arch[k] for k in keys}


def _atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary name, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
