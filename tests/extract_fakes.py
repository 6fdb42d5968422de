"""A small deterministic encoder for extraction and store tests (no model weights).

Features of residue j of an input text s (a whole sequence or one window of it), D >= 2:

    layer 0:  [code(s[j]), j, code(s[j]) * 0.1 * k for k = 2 .. D-1]
    layer l:  layer l-1 at j + 0.5 * (layer l-1 at j-1 + layer l-1 at j+1)   (0 beyond the ends)

so residues see their neighbours (windows matter) and the numbers can be computed by hand.
Every text is computed on its own in float64, so a row never depends on its batch; padding
positions are NaN, so any use of padding shows up.

Run as a script it extracts a FASTA-free list of sequences into a store (crash and
concurrency tests):
    python tests/extract_fakes.py STORE_PATH N_SEQUENCES DELAY_S FLUSH_BYTES [COMMIT_SECONDS]
        [--shard-tokens T] [--shard K] [--no-claims] [--no-filelock]
``--shard K`` writes only the K-th planned shard (as a phase-1 job does); ``--no-claims``
makes every claim succeed (writers race on the same shards); ``--no-filelock`` replaces
``filelock.FileLock`` by a no-op before ptransfer is imported.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from ptransfer.encoders.base import CheckpointRef, Encoder

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def code(residue: str) -> float:
    return float(AMINO_ACIDS.index(residue) + 1)


def reference_features(text: str, n_layers: int, dim: int) -> np.ndarray:
    """n_layers x len(text) x D in float64: the formula in the module docstring."""
    codes = np.array([code(r) for r in text])
    layer = np.zeros((len(text), dim))
    layer[:, 0] = codes
    layer[:, 1] = np.arange(len(text))
    for k in range(2, dim):
        layer[:, k] = codes * 0.1 * k
    layers = [layer]
    for _ in range(1, n_layers):
        previous = layers[-1]
        padded = np.pad(previous, ((1, 1), (0, 0)))
        layers.append(previous + 0.5 * (padded[:-2] + padded[2:]))
    return np.stack(layers)


class FakeEncoder(Encoder):
    """Deterministic per-text features; optional delay and simulated CUDA OOM."""

    family = "fake"
    n_params = 0

    def __init__(self, n_layers: int = 3, dim: int = 4, max_len: int | None = None,
                 delay: float = 0.0, oom_above: int | None = None, pooling: str = "mean",
                 device: str = "cpu") -> None:
        self.name = "fake"
        self.n_layers, self.dim, self.max_len = n_layers, dim, max_len
        self.delay, self.oom_above, self.pooling = delay, oom_above, pooling
        self._device = torch.device(device)
        self.batch_sizes: list[int] = []
        self.inference_mode_seen: list[bool] = []

    def load(self, checkpoint: CheckpointRef, ablation: str, seed: int) -> FakeEncoder:
        return self

    @property
    def device(self) -> torch.device:
        return self._device

    def embed(self, sequences: list[str]) -> torch.Tensor:
        self.inference_mode_seen.append(torch.is_inference_mode_enabled())
        if self.oom_above is not None and len(sequences) > self.oom_above:
            raise torch.cuda.OutOfMemoryError(f"fake OOM on a batch of {len(sequences)}")
        self.batch_sizes.append(len(sequences))
        if self.max_len is not None:
            assert max(map(len, sequences)) <= self.max_len, "extraction exceeded max_len"
        if self.delay:
            time.sleep(self.delay)
        longest = max(len(s) for s in sequences)
        out = torch.full((self.n_layers, len(sequences), longest, self.dim), float("nan"))
        for i, text in enumerate(sequences):
            out[:, i, : len(text)] = torch.from_numpy(
                reference_features(text, self.n_layers, self.dim)).float()
        return out  # n_layers x B x T x D


def make_sequences(n: int, seed: int = 0, low: int = 5, high: int = 40) -> list[str]:
    """``n`` distinct random sequences of lengths in [low, high)."""
    rng = np.random.default_rng(seed)
    sequences: dict[str, None] = {}
    while len(sequences) < n:
        length = int(rng.integers(low, high))
        sequences["".join(rng.choice(list(AMINO_ACIDS), size=length))] = None
    return list(sequences)


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("path", type=Path)
    parser.add_argument("n_sequences", type=int)
    parser.add_argument("delay", type=float)
    parser.add_argument("flush_bytes", type=int)
    parser.add_argument("commit_seconds", type=float, nargs="?", default=120.0)
    parser.add_argument("--shard-tokens", type=int, default=60_000_000)
    parser.add_argument("--shard", type=int, default=None)
    parser.add_argument("--no-claims", action="store_true")
    parser.add_argument("--no-filelock", action="store_true")
    args = parser.parse_args(argv)
    if args.no_filelock:
        _disable_filelock()
    from ptransfer.embed import claims, extract
    from ptransfer.embed.batching import Batching
    from ptransfer.embed.shards import plan_shards
    from ptransfer.embed.store import EmbeddingStore

    if args.no_claims:  # every writer believes it holds every claim
        claims.Claim.try_acquire = lambda self: True
        claims.Claim.release = lambda self: None
    encoder = FakeEncoder(n_layers=3, dim=4, delay=args.delay)
    store = EmbeddingStore(args.path, {"model": "fake"}, encoder.n_layers, encoder.dim,
                           level="residue", commit_seconds=args.commit_seconds)
    sequences = make_sequences(args.n_sequences)
    options = extract.ExtractOptions(64, progress=False, flush_bytes=args.flush_bytes)
    if args.shard is None:
        embedded = extract.extract_to_store(encoder, sequences, store, toks_per_batch=64,
                                            progress=False, flush_bytes=args.flush_bytes,
                                            shard_tokens=args.shard_tokens)
    else:  # the shards extract_to_store plans, batches as it runs them
        batching = Batching(64, encoder.max_len, "window")
        shard = plan_shards(store.path, sequences, frozenset(), args.shard_tokens,
                            batching)[args.shard]
        embedded = extract.extract_shard(encoder, store, shard.name, shard.todo,
                                         lambda per_seq: per_seq, options).embedded
    print(f"embedded {embedded}", flush=True)


def _disable_filelock() -> None:
    """Replace filelock's locks by no-ops: whatever ptransfer does must not need them."""
    import contextlib

    import filelock

    class NoLock:
        def __init__(self, *args, **kwargs):
            pass

        def acquire(self, *args, **kwargs):
            return contextlib.nullcontext(self)

        def release(self, *args, **kwargs):
            return None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    filelock.FileLock = filelock.SoftFileLock = filelock.UnixFileLock = NoLock


if __name__ == "__main__":
    main(sys.argv[1:])
