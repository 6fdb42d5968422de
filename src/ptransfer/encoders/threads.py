"""Intra-op CPU threads for work too small to share.

A torch op above its grain size (32,768 elements) runs as a parallel region whose barrier
waits for the slowest thread. On a busy machine a thread waits for a core, so a small op run
on several threads costs several times its single-thread time (pooling one protein's
per-layer features: 4-6x the CPU time with two threads on the 2-core development machine;
a UniRep position: 17x). Work that is small by construction runs on one thread instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads, then restore the caller's number
    (``torch.set_num_threads`` costs about 0.1 us)."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)
