"""Benchmark: float16 vs float32 pooled storage (probe effect, disk), and verify speed.

The same cell is run twice through ``run_cell`` (the product path: extraction into the
store, ridge probe per layer, rows), once with ``extract.pooled_dtype=float32`` (default)
and once with ``float16``: FLIP GB1 ``two_vs_rest`` from ``../shared/data`` (56-residue
domain), a randomly initialised ``esm2_t6_8M`` (7 layers x 320; ``random_init`` reads no
weights file), seed 0, a fixed subsample of each split (``--train/--val/--test``, the
cell's own fixed draw). Printed: the layer selected on validation under each dtype, the
test Spearman per layer, max |delta| over layers and |delta| at the selected layer, each
store's size on disk, and the time ``ptransfer store verify`` takes to read both stores
(every chunk, checksums and finiteness). Run:

    python scripts/bench_store.py --train 2000 --val 500 --test 2000 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from ptransfer.cell.run import run_cell
from ptransfer.embed.verify import verify_dir

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def run(results: Path, dtype: str, args) -> tuple[object, float, int]:
    """(rows frame, seconds, store bytes) of the cell with pooled storage in ``dtype``."""
    subsample = f"{{train:{args.train},val:{args.val},test:{args.test}}}"
    overrides = [f"task={args.task}", "model=esm2_t6_8M", "ablation=random_init", "seed=0",
                 f"data.root={args.data}", f"results_dir={results}", f"subsample={subsample}",
                 "extract.progress=false", f"extract.pooled_dtype={dtype}", "head=ridge"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    before = {p: p.stat().st_size for p in (results / "embeddings").rglob("*.h5")}
    started = time.perf_counter()
    frame = run_cell(cfg)
    seconds = time.perf_counter() - started
    after = {p: p.stat().st_size for p in (results / "embeddings").rglob("*.h5")}
    new = [size for path, size in after.items() if path not in before]
    return frame, seconds, sum(new)


def test_scores(frame, metric: str = "spearman") -> dict[int, tuple[float, str]]:
    """layer -> (test metric, selected hyper-parameters)."""
    main = frame[(frame.metric == metric) & (frame.eval_set == "test")]
    return {int(row.layer): (float(row.value), row.hparams) for row in main.itertuples()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="gb1_two_vs_rest")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "res"
        out = {dtype: run(results, dtype, args) for dtype in ("float32", "float16")}
        lines: list[str] = []
        _, verify_seconds = verify_dir(results / "embeddings", out=lines.append)
        print("\n".join(lines))
    scores = {dtype: test_scores(frame) for dtype, (frame, _, _) in out.items()}
    best = {dtype: int(frame[frame.best_layer].layer.iloc[0]) for dtype, (frame, _, _) in
            out.items()}
    print(f"task {args.task}, random-init esm2_t6_8M, subsample train {args.train} / val "
          f"{args.val} / test {args.test}, torch threads {args.threads}")
    for dtype, (_, seconds, size) in out.items():
        print(f"{dtype}: cell {seconds:.1f} s, store {size / 1e6:.2f} MB, selected layer "
              f"{best[dtype]}")
    print("layer  test spearman float32  float16  |delta|    hparams float32 / float16")
    deltas = {}
    for layer in sorted(scores["float32"]):
        (a, ha), (b, hb) = scores["float32"][layer], scores["float16"][layer]
        deltas[layer] = abs(a - b)
        print(f"{layer:5d}  {a:21.6f}  {b:7.6f}  {deltas[layer]:.2e}  {ha} / {hb}")
    chosen = best["float32"]
    print(f"same selected layer: {best['float32'] == best['float16']}; |delta| at layer "
          f"{chosen}: {deltas[chosen]:.2e}; max |delta| over layers: {max(deltas.values()):.2e}")
    total = sum(size for _, _, size in out.values())
    print(f"store verify: {total / 1e6:.2f} MB in {verify_seconds:.2f} s")


if __name__ == "__main__":
    main()
