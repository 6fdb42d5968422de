"""How sequences become forward passes: windows, token-budget batches, and the units a shard
must not split (pure Python: planning a sweep needs it without torch).

Batches are length-sorted under a token budget (``plan_batches``). Sequences longer than a
model's ``max_len`` follow a length policy (``split_into_pieces``):

- ``window`` (default): overlapping windows of ``max_len`` residues with stride
  ``max_len // 2`` (the last window is moved left to end at the last residue);
- ``truncate``: only the first ``max_len`` residues are embedded.

A shard of a store (``embed.shards``) is cut only where a batch of the store's whole
extraction ends (``batch_units``): each shard's batches are then exactly the batches one
writer of the whole store runs, so the features, to the last bit, do not depend on how many
shards there are or which of them a killed job left to redo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LENGTH_POLICIES = ("window", "truncate")
LENGTH_POLICY_KEY = "extract.length_policy"  # config keys named in error messages
TOKS_PER_BATCH_KEY = "extract.toks_per_batch"


@dataclass(frozen=True)
class Batching:
    """What decides the batches of an extraction (besides the sequences, in order)."""

    toks_per_batch: int = 4096
    max_len: int | None = None
    length_policy: str = "window"


def plan_batches(
    lengths: Sequence[int], toks_per_batch: int, extra_toks: int = 2,
    groups: Sequence[int] | None = None,
) -> list[list[int]]:
    """Group sequence (or piece) indices into length-sorted batches under a token budget.

    A batch of B rows costs ``B x (longest + extra_toks)`` padded tokens (extra: BOS/EOS)
    and stays within ``toks_per_batch``; a row over the budget on its own gets a batch of
    its own. Longest first, so memory trouble shows up in the first batch. ``groups``: the
    sequence of each piece; the pieces (windows) of one sequence start a new batch rather
    than be split across two when they fit in one, so batches chain through a sequence only
    when it is longer than a batch.
    """
    if toks_per_batch < 1:
        raise ValueError(f"{TOKS_PER_BATCH_KEY} must be >= 1, got {toks_per_batch}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups = list(groups) if groups is not None else list(range(len(lengths)))
    batches: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for run in _runs(order, groups):
        size = max(lengths[i] for i in run) + extra_toks
        together = max(widest, size) * (len(current) + len(run))
        if current and together > toks_per_batch and size * len(run) <= toks_per_batch:
            batches.append(current)  # the whole sequence fits in a batch of its own
            current, widest = [], 0
        for index in run:
            size = lengths[index] + extra_toks
            if current and max(widest, size) * (len(current) + 1) > toks_per_batch:
                batches.append(current)
                current, widest = [], 0
            current.append(index)
            widest = max(widest, size)
    if current:
        batches.append(current)
    return batches


def _runs(order: list[int], groups: list[int]) -> list[list[int]]:
    """``order`` cut into runs of consecutive indices of one group."""
    runs: list[list[int]] = []
    for index in order:
        if runs and groups[runs[-1][-1]] == groups[index]:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


@dataclass(frozen=True)
class Piece:
    """Residues ``start:end`` of sequence ``seq_index``: what one forward row embeds."""

    seq_index: int
    start: int
    end: int


def window_starts(length: int, window: int) -> list[int]:
    """Start of each window of ``window`` residues covering ``length`` residues.

    Stride ``window // 2`` (at least 1); when the stride does not land on the end, a last
    window ``[length - window, length)`` covers the tail.
    """
    if length <= window:
        return [0]
    stride = max(1, window // 2)
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def split_into_pieces(
    sequences: Sequence[str], max_len: int | None, length_policy: str
) -> list[Piece]:
    """The forward rows needed for ``sequences`` under the length policy."""
    if length_policy not in LENGTH_POLICIES:
        raise ValueError(f"{LENGTH_POLICY_KEY} must be one of {LENGTH_POLICIES}, "
                         f"got {length_policy!r}")
    pieces = []
    for index, sequence in enumerate(sequences):
        if not isinstance(sequence, str) or not sequence:
            raise ValueError(f"sequence {index} is empty or not a string: {sequence!r}")
        length = len(sequence)
        if max_len is None or length <= max_len:
            pieces.append(Piece(index, 0, length))
        elif length_policy == "truncate":
            pieces.append(Piece(index, 0, max_len))
        else:
            pieces.extend(Piece(index, s, s + max_len) for s in window_starts(length, max_len))
    return pieces


def batch_units(sequences: Sequence[str], batching: Batching) -> list[list[int]]:
    """Consecutive runs of ``sequences`` (indices, in order, longest first) that are whole
    batches of their extraction: the batches ``plan_batches`` makes of their pieces, with
    two merged when a sequence's windows fall in both (a sequence longer than a batch)."""
    pieces = split_into_pieces(sequences, batching.max_len, batching.length_policy)
    units: list[list[int]] = []
    for batch in plan_batches([p.end - p.start for p in pieces], batching.toks_per_batch,
                              groups=[p.seq_index for p in pieces]):
        indices = sorted({pieces[i].seq_index for i in batch})
        if units and indices[0] <= units[-1][-1]:  # a sequence spans the two batches
            units[-1].extend(i for i in indices if i > units[-1][-1])
        else:
            units.append(indices)
    return units
