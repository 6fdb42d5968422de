"""Publishing a shard of several parts: linked under a shard file (now) against merged into one
file (what ptransfer 0.2 did for every shard). Prints the numbers docs/benchmarks.md quotes.

    python scripts/bench_publish.py [--parts 8] [--part-mb 32] [--layers 13] [--dim 480]

A residue-level float16 store (ESM-2 35M's 13 layers x 480 dims by default) is written as
one shard whose rows are committed as ``--parts`` parts of about ``--part-mb`` MiB each (what
a long extraction commits, per 64 MiB or per two minutes). Timed: the end of the writer's
block (publication: merge or links, the SHA-256 of every file, the manifest, the index
file), and reading every layer of every row back (``EmbeddingStore.read_layer``). Counted:
the bytes written at publication (new files, not links), which is also the extra disk the
publication needs at its peak. Best of 3; the load average is printed (a shared box).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ptransfer.embed import diskspace
from ptransfer.embed.store import EmbeddingStore


def inodes(folder: Path) -> dict[int, int]:
    """inode -> bytes of every file under ``folder``."""
    return {p.stat().st_ino: p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def publish_once(root: Path, merge: bool, args) -> tuple[float, float, float]:
    """(publication seconds, bytes written by it, seconds to read every layer back)."""
    diskspace.MERGE_BYTES = (1 << 62) if merge else 0
    store = EmbeddingStore(root / "s.h5", {"model": "bench"}, args.layers, args.dim,
                           level="residue", flush_bytes=args.part_mb << 20)
    rng = np.random.default_rng(0)
    per_part = (args.part_mb << 20) // (args.layers * args.dim * 2 * 300)
    sequences = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 300))
                 for _ in range(per_part * args.parts)]
    with store.writer(shard="shard-bench") as writer:
        for sequence in sequences:  # n_layers x L x D rows; a part per ~part_mb MiB
            writer.add(sequence, rng.standard_normal((args.layers, 300, args.dim),
                                                     dtype=np.float32))
        writer.commit()  # the last rows as a part: what is left is the publication
        before = inodes(root)
        started = time.perf_counter()
    published = time.perf_counter() - started
    written = sum(size for inode, size in inodes(root).items() if inode not in before)
    reader = EmbeddingStore(root / "s.h5", {"model": "bench"}, args.layers, args.dim,
                            level="residue", read_only=True)
    started = time.perf_counter()
    for layer in range(args.layers):
        reader.read_layer(layer, sequences, dtype=None)
    return published, written, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--part-mb", type=int, default=32)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--dim", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for merge in (True, False):
        runs = []
        for _ in range(args.repeats):
            root = Path(tempfile.mkdtemp())
            try:
                runs.append(publish_once(root, merge, args))
            finally:
                shutil.rmtree(root)
        label = "merged into one file (0.2)" if merge else "linked under a shard file"
        print(f"{args.parts} parts x {args.part_mb} MiB, {label}: publish "
              f"{min(r[0] for r in runs):.2f} s, {runs[0][1] / 2**20:.1f} MiB written, "
              f"read every layer {min(r[2] for r in runs):.2f} s")
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
