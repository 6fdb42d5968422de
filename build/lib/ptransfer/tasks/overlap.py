"""Sequence overlap between sets, substring either way: the leakage check and its removal.

A query sequence *overlaps* a reference set when it equals, is contained in, or contains one
of the reference sequences (a CB513 chain cut out of a training chain, or a training
fragment inside a test protein, is leakage as much as an identical one).

Algorithm (no all-pairs loop): equal sequences by a set lookup; for containment the longer
side's sequences are sorted by length (longest first) and joined with a separator into one
string, so "is ``s`` inside any sequence longer than ``s``" is one ``str.find`` over the
prefix holding exactly those longer sequences (CPython's fast search is sublinear in
practice for protein-length needles). A needle as long as the longest sequence on the other
side is only checked for equality, so sets of equal-length sequences (GB1: every sequence
56 residues) cost set lookups only. Measured on ss3 (10,848 train/val proteins vs 649 test
proteins, both directions): see ``scripts/bench_overlap.py`` and docs/benchmarks.md.

``task.overlap`` (``keep`` | ``drop``) applies it to every task in ``assemble_task``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

OVERLAP_POLICIES = ("keep", "drop")
_SEP = "\n"  # never inside a sequence (validated), so no match spans two sequences


def check_overlap_policy(policy: str, config_key: str = "task.overlap") -> str:
    if policy not in OVERLAP_POLICIES:
        raise ValueError(f"{config_key} must be one of {list(OVERLAP_POLICIES)}, got {policy!r}")
    return policy


class _Joined:
    """Sequences sorted longest first and joined: a prefix holds all longer than a length."""

    def __init__(self, sequences: Sequence[str]) -> None:
        self.order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        lengths = [len(sequences[i]) for i in self.order]
        self.text = _SEP.join(sequences[i] for i in self.order)
        self.starts = np.cumsum([0] + [n + 1 for n in lengths[:-1]]).tolist()
        self._neg_lengths = [-n for n in lengths]  # ascending, for bisect
        self.longest = lengths[0] if lengths else 0

    def end_of_longer_than(self, length: int) -> int:
        """Text offset where the sequences of length <= ``length`` begin."""
        k = bisect.bisect_left(self._neg_lengths, -length)  # first with len <= length
        return len(self.text) if k == len(self.starts) else self.starts[k]

    def owner(self, position: int) -> int:
        """Position (in sorted order) of the sequence that text offset ``position`` is in."""
        return bisect.bisect_right(self.starts, position) - 1


def _check(sequences: Sequence[str], what: str) -> None:
    bad = next((i for i, s in enumerate(sequences) if not s or _SEP in s), None)
    if bad is not None:
        raise ValueError(f"{what}: sequence {bad} is empty or holds a line break")


def contained_in(needles: Sequence[str], haystacks: Sequence[str]) -> np.ndarray:
    """Bool array N: ``needles[i]`` equals or is a substring of some ``haystacks[j]``."""
    _check(needles, "overlap needles")
    _check(haystacks, "overlap haystacks")
    exact = set(haystacks)
    joined = _Joined(haystacks)
    out = np.zeros(len(needles), dtype=bool)
    for i, needle in enumerate(needles):
        if needle in exact:
            out[i] = True
        elif len(needle) < joined.longest:
            out[i] = joined.text.find(needle, 0, joined.end_of_longer_than(len(needle))) >= 0
    return out


def containing(queries: Sequence[str], needles: Sequence[str]) -> np.ndarray:
    """Bool array Q: ``queries[i]`` equals or contains some ``needles[j]`` as a substring."""
    _check(queries, "overlap queries")
    _check(needles, "overlap needles")
    exact = set(needles)
    out = np.array([q in exact for q in queries], dtype=bool)
    joined = _Joined(queries)
    for needle in set(needles):
        if len(needle) >= joined.longest:
            continue  # no query is longer: equality only, handled above
        end = joined.end_of_longer_than(len(needle))
        position = joined.text.find(needle, 0, end)
        while position >= 0:
            k = joined.owner(position)
            out[joined.order[k]] = True
            # next candidate: the start of the following sequence (one mark per sequence)
            if k + 1 >= len(joined.starts):
                break
            position = joined.text.find(needle, joined.starts[k + 1], end)
    return out


def overlap_mask(queries: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Bool array Q: ``queries[i]`` equals, is inside, or contains a reference sequence."""
    if not len(queries) or not len(references):
        return np.zeros(len(queries), dtype=bool)
    return contained_in(queries, references) | containing(queries, references)
