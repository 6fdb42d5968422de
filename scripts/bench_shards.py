"""How a sharded store reads: its shards directly, through the index file's virtual datasets,
against one merged file (what ptransfer 0.1 wrote). Prints the numbers docs/benchmarks.md
quotes.

    python scripts/bench_shards.py [--rows 8733] [--layers 7] [--dim 320] [--shards 1 8 64]

The store holds random float32 rows of GB1's size for ESM-2 8M (8,733 proteins x 7 layers
x 320 dims, 78 MB) by default. Timed: opening the store (its row index), writing the index
file (finalize: metadata only), reading every layer for every sequence in the task's order
(EmbeddingStore.read_layer, what a probe does), reading every layer through the index file
with h5py alone, and the same from one merged file. Best of 3.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from ptransfer.embed.store import EmbeddingStore


def read_with_h5py(path: Path, keys: list[str], n_layers: int) -> None:
    """Every layer's rows of ``keys``, in that order, with h5py alone (a user's read)."""
    with h5py.File(path, "r") as handle:
        where = {k: i for i, k in enumerate(handle["keys"][...].astype(str))}
        wanted = np.array([where[k] for k in keys])
        for layer in range(n_layers):
            handle[f"layer_{layer:03d}"][...][wanted]


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def build(folder: Path, sequences, rows, n_shards: int, n_layers: int, dim: int) -> Path:
    path = folder / f"s{n_shards}.h5"
    store = EmbeddingStore(path, {"model": "bench"}, n_layers, dim)
    for part in np.array_split(np.arange(len(sequences)), n_shards):
        with store.writer(index=False) as writer:
            for i in part:
                writer.add(sequences[i], rows[i])
    return path


def merged_copy(index: Path, target: Path) -> None:
    """One real file with the index's rows (the 0.1 layout), written with h5py."""
    with h5py.File(index, "r") as src, h5py.File(target, "w") as out:
        for name in ("keys", "lengths"):
            out.create_dataset(name, data=src[name][...])
        for name in (n for n in src if n.startswith("layer_")):
            out.create_dataset(name, data=src[name][...], chunks=True, fletcher32=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=8733)
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--dim", type=int, default=320)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sequences = ["M" + "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 12))
                 for _ in range(args.rows)]
    rows = rng.normal(size=(args.rows, args.layers, args.dim)).astype(np.float32)
    order = list(rng.permutation(args.rows))
    task_order = [sequences[i] for i in order]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n_shards in args.shards:
            path = build(folder, sequences, rows, n_shards, args.layers, args.dim)
            store = EmbeddingStore(path, {"model": "bench"}, args.layers, args.dim)
            finalize = best_of(lambda s=store: (s.path.unlink(missing_ok=True), s.finalize()))
            opened = best_of(lambda p=path: EmbeddingStore(p, {"model": "bench"}, args.layers,
                                                           args.dim))

            def through_store(s=store):
                for layer in range(args.layers):
                    s.read_layer(layer, task_order)

            def through_index(p=path):
                read_with_h5py(p, store_keys(task_order), args.layers)

            results.append({"shards": n_shards, "open_s": opened, "finalize_s": finalize,
                            "read_store_s": best_of(through_store),
                            "read_index_h5py_s": best_of(through_index)})
            if n_shards == args.shards[0]:
                merged = folder / "merged.h5"
                merged_copy(path, merged)

                def through_merged(p=merged):
                    read_with_h5py(p, store_keys(task_order), args.layers)

                merged_s = best_of(through_merged)
            shutil.rmtree(path.with_name(path.name + ".shards"))
            path.unlink()
    print(json.dumps({"rows": args.rows, "layers": args.layers, "dim": args.dim,
                      "mb": rows.nbytes / 1e6, "merged_read_h5py_s": merged_s,
                      "by_shards": results}, indent=1))
    print(f"\n{args.rows} rows x {args.layers} layers x {args.dim} float32 "
          f"({rows.nbytes / 1e6:.0f} MB); every layer read in task order:")
    print(f"  one merged file (h5py):              {merged_s:.3f} s")
    for r in results:
        print(f"  {r['shards']:3d} shard(s): store {r['read_store_s']:.3f} s, index file (h5py) "
              f"{r['read_index_h5py_s']:.3f} s, open {r['open_s'] * 1000:.0f} ms, finalize "
              f"{r['finalize_s'] * 1000:.0f} ms")


def store_keys(sequences):
    from ptransfer.embed.store_files import sequence_key

    return [sequence_key(s) for s in sequences]


if __name__ == "__main__":
    main()
