"""Extraction: sequences -> per-layer features, batch by batch, into the embedding store.

All layers come from one forward pass per batch. Batches are length-sorted under a token
budget (``plan_batches``). Sequences longer than ``encoder.max_len`` follow a length policy:

- ``window`` (default): overlapping windows of ``max_len`` residues with stride
  ``max_len // 2`` (the last window is moved left to end at the last residue); each
  residue's features are the mean over the windows that cover it.
- ``truncate``: only the first ``max_len`` residues are embedded; per-residue features of
  such a sequence have ``max_len`` rows, so residue-level tasks refuse this policy.

On CUDA, ``precision`` bf16/fp16 runs the forward under autocast; so does bf16 on a CPU
that computes bf16 natively (``cpu_has_native_bf16``; a clear error on other CPUs). Features
are always returned as float32 on the CPU. A CUDA out-of-memory error splits the batch in halves and
retries (recursively) down to single sequences.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from ptransfer.embed.batching import (  # noqa: F401 - batching names: extract's API too
    LENGTH_POLICIES,
    LENGTH_POLICY_KEY,
    TOKS_PER_BATCH_KEY,
    Batching,
    Piece,
    plan_batches,
    split_into_pieces,
    window_starts,
)
from ptransfer.embed.claims import Claim
from ptransfer.embed.diskspace import expected_store_bytes
from ptransfer.embed.publication import claim_or_wait, retire_shard
from ptransfer.embed.shard_sizing import ShardSizing, StoreWork
from ptransfer.embed.shards import plan_shards
from ptransfer.embed.store import EmbeddingStore
from ptransfer.encoders.base import Encoder
from ptransfer.encoders.threads import intra_op_threads

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_KEY = "extract.precision"  # config key named in error messages


def check_length_policy(
    encoder: Encoder, sequences: Sequence[str], length_policy: str, level: str
) -> None:
    """Refuse ``truncate`` for residue-level features of sequences longer than max_len.

    Truncated sequences get features for their first max_len residues only, which would
    misalign per-residue labels; callers that embed residue-level tasks call this first.
    """
    if length_policy not in LENGTH_POLICIES:
        raise ValueError(f"{LENGTH_POLICY_KEY} must be one of {LENGTH_POLICIES}, "
                         f"got {length_policy!r}")
    max_len = getattr(encoder, "max_len", None)
    if level != "residue" or length_policy != "truncate" or max_len is None:
        return
    too_long = [i for i, s in enumerate(sequences) if len(s) > max_len]
    if too_long:
        raise ValueError(
            f"{LENGTH_POLICY_KEY}=truncate would drop residues of {len(too_long)} sequences "
            f"longer than {encoder.name}'s max_len={max_len} (first: index {too_long[0]}), "
            f"which misaligns per-residue labels; use {LENGTH_POLICY_KEY}=window")


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512-BF16 / AMX, Arm BF16


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively (its flags list AVX512-BF16, AMX-BF16 or Arm
    BF16). Elsewhere oneDNN emulates bf16 through fp32, slower than fp32 itself."""
    try:
        with open(cpuinfo) as handle:
            text = handle.read()
    except OSError:  # not Linux: no flags to read, so no claim of native support
        return False
    flags = {word for line in text.splitlines()
             if line.split(":")[0].strip() in ("flags", "Features") for word in line.split()}
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def _check_precision(encoder: Encoder, precision: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"{PRECISION_KEY} must be one of {list(PRECISIONS)}, got {precision!r}")
    autocast_dtype = PRECISIONS[precision]
    device = encoder.device.type
    if autocast_dtype is None or device == "cuda":
        return autocast_dtype
    if device == "cpu" and precision == "bf16":
        if cpu_has_native_bf16():
            return autocast_dtype
        raise ValueError(f"{PRECISION_KEY}=bf16 on the CPU needs native bf16 instructions "
                         f"(flags {', '.join(CPU_BF16_FLAGS[:2])} in /proc/cpuinfo), which "
                         f"this CPU lacks; use {PRECISION_KEY}=fp32 or a CUDA device")
    raise ValueError(f"{PRECISION_KEY}={precision!r} needs a CUDA device (or, for bf16, a CPU "
                     f"with native bf16) but the encoder runs on {encoder.device}; use "
                     f"{PRECISION_KEY}=fp32")


def _forward(encoder: Encoder, texts: list[str], autocast_dtype: torch.dtype | None) -> list:
    """Per-text features, each n_layers x len(text) x D float32 on the CPU."""
    with torch.inference_mode():
        if autocast_dtype is None:
            batch = encoder.embed(texts)  # n_layers x B x T x D
        else:
            with torch.autocast(device_type=encoder.device.type, dtype=autocast_dtype):
                batch = encoder.embed(texts)
        batch = batch.to(device="cpu", dtype=torch.float32)  # one transfer for the batch
    return [batch[:, i, : len(text)] for i, text in enumerate(texts)]


def _forward_splitting_on_oom(
    encoder: Encoder, texts: list[str], autocast_dtype: torch.dtype | None
) -> list:
    """``_forward``, halving the batch on CUDA out-of-memory until single texts fail."""
    try:
        return _forward(encoder, texts, autocast_dtype)
    except torch.cuda.OutOfMemoryError as err:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(texts) == 1:
            raise RuntimeError(
                f"out of GPU memory on a single sequence of {len(texts[0])} residues; lower "
                f"the encoder's max_len or use {PRECISION_KEY}=bf16") from err
        half = len(texts) // 2
        log.warning("CUDA out of memory on a batch of %d; retrying as %d + %d",
                    len(texts), half, len(texts) - half)
        return (_forward_splitting_on_oom(encoder, texts[:half], autocast_dtype)
                + _forward_splitting_on_oom(encoder, texts[half:], autocast_dtype))


class _WindowAverager:
    """Sums window features per sequence; a sequence is done when all its pieces are in."""

    def __init__(self, pieces: list[Piece], sequences: Sequence[str]) -> None:
        self.sequences = sequences
        self.remaining: dict[int, int] = {}
        for piece in pieces:
            self.remaining[piece.seq_index] = self.remaining.get(piece.seq_index, 0) + 1
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, torch.Tensor] = {}

    def add(self, piece: Piece, features: torch.Tensor) -> torch.Tensor | None:
        """Add one piece (n_layers x (end - start) x D); returns the full tensor when done."""
        index = piece.seq_index
        if self.remaining[index] == 1 and index not in self.sums:
            del self.remaining[index]
            return features  # the common case: one piece, nothing to average
        if index not in self.sums:
            n_layers, _, dim = features.shape
            length = len(self.sequences[index])
            self.sums[index] = torch.zeros(n_layers, length, dim)
            self.counts[index] = torch.zeros(1, length, 1)
        self.sums[index][:, piece.start: piece.end] += features
        self.counts[index][:, piece.start: piece.end] += 1
        self.remaining[index] -= 1
        if self.remaining[index]:
            return None
        del self.remaining[index]
        return self.sums.pop(index) / self.counts.pop(index)  # n_layers x L x D


def embed_sequences(
    encoder: Encoder,
    sequences: Sequence[str],
    toks_per_batch: int = 4096,
    length_policy: str = "window",
    precision: str = "fp32",
    progress: bool = True,
    skip: Callable[[list[int]], bool] | None = None,
) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
    """Embed ``sequences`` batch by batch, all layers from one forward per batch.

    Yields ``(indices, features)``: indices into ``sequences`` and, for each, a float32
    CPU tensor n_layers x L_i x D (L_i = len(sequence), or max_len when truncated).
    Sequences split into windows are yielded once their last window is embedded.
    ``skip(indices)``: a batch whose sequences it accepts is not run (a resumed shard's
    batches already saved); the batches themselves are the same either way.
    """
    autocast_dtype = _check_precision(encoder, precision)
    max_len = getattr(encoder, "max_len", None)
    pieces = split_into_pieces(sequences, max_len, length_policy)
    averager = _WindowAverager(pieces, sequences)
    plan = plan_batches([p.end - p.start for p in pieces], toks_per_batch,
                        groups=[p.seq_index for p in pieces])
    total = sum(len(s) for s in sequences)
    # No bar when there is nothing to embed (a complete store): an empty bar is noise.
    with tqdm(total=total, unit="res", unit_scale=True, desc=f"embed {encoder.name}",
              disable=not progress or total == 0) as bar:
        for batch in plan:
            batch_pieces = [pieces[i] for i in batch]
            if skip is not None and skip(sorted({p.seq_index for p in batch_pieces})):
                bar.update(sum(p.end - p.start for p in batch_pieces))
                continue
            texts = [sequences[p.seq_index][p.start: p.end] for p in batch_pieces]
            outputs = _forward_splitting_on_oom(encoder, texts, autocast_dtype)
            done_indices, done_features = [], []
            for piece, features in zip(batch_pieces, outputs):
                full = averager.add(piece, features)
                if full is not None:
                    done_indices.append(piece.seq_index)
                    done_features.append(full)
            bar.update(sum(len(sequences[i]) for i in done_indices))
            if done_indices:
                yield done_indices, done_features


def mean_pool(per_seq: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """n_layers x L x D (real residues only) -> n_layers x D, the mean over residues, and over
    the P positions of ``prefix`` (n_layers x P x D, ``Encoder.pooled_prefix``) when given."""
    if per_seq.ndim != 3 or per_seq.shape[1] == 0:
        raise ValueError("mean_pool expects n_layers x L x D with L >= 1, "
                         f"got {tuple(per_seq.shape)}")
    if prefix is None:
        return per_seq.mean(dim=1)
    return (prefix.sum(dim=1) + per_seq.sum(dim=1)) / (prefix.shape[1] + per_seq.shape[1])


def flatten_pool(per_seq: torch.Tensor, pad_to: int) -> torch.Tensor:
    """n_layers x L x D -> n_layers x (pad_to * D): zero-padded to pad_to residues, flattened."""
    n_layers, length, dim = per_seq.shape
    if length > pad_to:
        raise ValueError(f"flatten_pool: sequence of {length} residues is longer than "
                         f"pad_to={pad_to} (the longest sequence of the task)")
    padded = per_seq.new_zeros(n_layers, pad_to, dim)
    padded[:, :length] = per_seq
    return padded.reshape(n_layers, pad_to * dim)


@dataclass(frozen=True)
class ExtractOptions:
    toks_per_batch: int = 4096
    length_policy: str = "window"
    precision: str = "fp32"
    progress: bool = True
    flush_bytes: int | None = None


def extract_to_store(
    encoder: Encoder,
    sequences: Sequence[str],
    store: EmbeddingStore,
    toks_per_batch: int = 4096,
    length_policy: str = "window",
    precision: str = "fp32",
    progress: bool = True,
    pad_to: int | None = None,
    flush_bytes: int | None = None,
    shard_tokens: int | None = None,
    sizing: ShardSizing | None = None,
) -> int:
    """Embed the sequences the store lacks (each unique sequence once) and add them.

    The sequences are planned as shards within ``sizing`` (default: the documented targets;
    ``shard_tokens``, when given, caps each shard's tokens too), cut where a batch ends
    (``embed.shards.plan_shards``, ``embed.shard_sizing``); each shard with work left is claimed (or
    waited for, while another process writes it), embedded and published, and the store's
    index file is written at the end. Rows are pooled for a protein-level store
    (``encoder.pooling``: ``mean``, or ``flatten`` zero-padded to ``pad_to``, default the
    longest of ``sequences``) and per-residue for a residue-level store. Returns the number
    of sequences embedded here.
    """
    pool = pooling_for(encoder, sequences, store, pad_to)
    check_length_policy(encoder, sequences, length_policy, store.level)
    store.refresh()
    batching = Batching(toks_per_batch, getattr(encoder, "max_len", None), length_policy)
    sizing = sizing or ShardSizing()
    if shard_tokens is not None:
        sizing = dataclasses.replace(sizing, max_tokens=shard_tokens)
    limits = sizing.limits(StoreWork(encoder.n_params, store.level, store.n_layers, store.dim,
                                     store.dtype))
    shards = plan_shards(store.path, sequences, store.published_keys(), limits, batching)
    options = ExtractOptions(toks_per_batch, length_policy, precision, progress, flush_bytes)
    embedded = sum(extract_shard(encoder, store, shard.name, shard.todo, pool, options).embedded
                   for shard in shards)
    if shards or not store.path.exists():
        store.finalize()
    return embedded


class ShardWrite(NamedTuple):
    """What writing one shard did: sequences embedded here, and whether this writer's copy
    was published (False: another writer published the shard, or there was nothing)."""

    embedded: int
    published: bool


def extract_shard(encoder: Encoder, store: EmbeddingStore, name: str, todo: Sequence[str],
                  pool, options: ExtractOptions, index: bool = False,
                  claim: Claim | None = None) -> ShardWrite:
    """Write shard ``name`` of ``store``: the sequences of ``todo`` (in their planned order).

    The shard is claimed first (``claim``: already held by the caller, which claimed it
    before taking a device); while another live process writes it, this waits for its
    publication and embeds nothing. A broken shard (a file missing or of the wrong size,
    ``embed.publication``) is removed and written again. A killed writer's committed parts
    are adopted: a batch whose sequences are all saved is not run again, the others are run
    as planned (so each row is computed in the same batch as without the kill). Parts are
    committed only where a batch ends.
    """
    store.shard_dir.mkdir(parents=True, exist_ok=True)
    claim = claim or claim_or_wait(store.shard_dir, name, store)
    if claim is None:
        store.refresh()
        return ShardWrite(0, False)
    todo = list(dict.fromkeys(todo))
    added = 0
    try:
        retire_shard(store.shard_dir, name, store)  # a broken shard: written again, afresh
        with store.writer(options.flush_bytes, shard=name, index=index) as writer:
            left = [s for s in todo if not writer.has(s)]
            _log_expected_size(encoder, left, store, name)
            for indices, features in embed_sequences(
                    encoder, todo, options.toks_per_batch, options.length_policy,
                    options.precision, options.progress and bool(left),
                    skip=lambda batch: all(writer.has(todo[i]) for i in batch)):
                for index_, per_seq in zip(indices, features):
                    added += writer.add(todo[index_], pool(per_seq), commit=False)
                writer.commit_if_due()  # a batch has ended: the only place parts are cut
    finally:
        claim.release()
    return ShardWrite(added, writer.published)


def pooling_for(encoder: Encoder, sequences: Sequence[str], store: EmbeddingStore,
                 pad_to: int | None):
    """The row function of this store, after checking the store's shape fits the encoder."""
    if store.n_layers != encoder.n_layers:
        raise ValueError(f"store {store.path} has n_layers={store.n_layers}, encoder "
                         f"{encoder.name} has {encoder.n_layers}")
    width = pad_to if pad_to is not None else max((len(s) for s in sequences), default=0)
    pool = row_function(encoder, store.level, width)
    flat = store.level == "protein" and encoder.pooling == "flatten"
    expected_dim = width * encoder.dim if flat else encoder.dim
    if store.dim != expected_dim:
        raise ValueError(f"store {store.path} has dim={store.dim} but {store.level}-level rows "
                         f"of {encoder.name} ({encoder.pooling} pooling) have {expected_dim}")
    return pool


def row_function(encoder: Encoder, level: str, pad_to: int | None):
    """per-sequence features (n_layers x L x D) -> the rows a ``level`` store or array holds:
    per residue as they are; per protein ``encoder.pooling``'s ``mean`` (with the encoder's
    ``pooled_prefix``) or ``flatten`` (zero-padded to ``pad_to`` residues)."""
    if level == "residue":
        return lambda per_seq: per_seq
    if encoder.pooling == "mean":
        prefix = encoder.pooled_prefix()
        pool = lambda per_seq: mean_pool(per_seq, prefix)  # noqa: E731
    elif encoder.pooling == "flatten":
        pool = lambda per_seq: flatten_pool(per_seq, pad_to)  # noqa: E731
    else:
        raise ValueError(f"encoder {encoder.name} has unknown pooling {encoder.pooling!r}")

    def one_protein(per_seq: torch.Tensor) -> torch.Tensor:
        with intra_op_threads(1):  # one protein's reduction: never worth a parallel region
            return pool(per_seq)
    return one_protein


def _log_expected_size(encoder: Encoder, todo: list[str], store: EmbeddingStore,
                       shard: str) -> None:
    residues = sum(len(s) for s in todo)
    rows = residues if store.level == "residue" else len(todo)
    n_bytes = expected_store_bytes(rows, store.n_layers, store.dim, store.dtype)
    log.info("extracting %d sequences (%d residues) with %s: %d layers x %d dims, %s rows, "
             "about %.2f GB in %s (shard %s)", len(todo), residues, encoder.name,
             store.n_layers, store.dim, store.level, n_bytes / 1e9, store.path, shard)
