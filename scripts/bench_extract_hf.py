"""The HF BERT path of ``bench_extract.py`` (``--hf``): AntiBERTy through ptransfer vs a plain
``AutoModel`` loop, real weights (``pip install --no-deps antiberty==0.1.3``).

Sequences (``--dataset``): ``gb1``, FLIP GB1's 8,733 unique variants as the GB1 tasks embed
them (the 56-residue domain, ``conf/task/gb1_*.yaml``: all of one length); or ``cb513``, the
CB513 proteins of at most 510 residues (399 distinct chains, 85,201 residues: AntiBERTy has 512
positions, and the plain loop cannot window), in the file's order; ``--limit`` keeps the
first N. All 9 layers, mean-pooled per protein.

- plain loop: the loop AntiBERTy's own runner uses (``AntiBERTyRunner.embed``), written here
  from its behaviour: ``BertTokenizer`` on the package's vocab.txt (``do_lower_case=False``),
  residues joined by spaces, fixed-size batches in input order padded to the batch's longest,
  ``AutoModel`` forward with ``output_hidden_states=True`` under ``torch.no_grad``, hidden
  states stacked, then per sequence the residue positions (``[1, len + 1)``) mean-pooled.
  ``--plain-batch`` sets the batch sizes measured (one column each).
- ptransfer: ``model=antiberty`` (``HfEncoder``) + ``extract_to_store`` into an
  ``EmbeddingStore`` (HDF5): length-sorted batches under ``--toks-per-batch``, every sequence
  tokenized once, residues found by the special-tokens mask.

Every tool and precision runs on each chunk of ``--chunk`` sequences in turn (order reversed
every other chunk), so all see the same machine load. Times: extraction (+ writing, for
ptransfer) summed over chunks, model loading excluded (both load once). bf16 (autocast) runs
only on a CPU with native bf16 (``cpu_has_native_bf16``), plain loop at the largest batch.
Printed: residues/s (wall and process CPU time), ratios, and the largest |difference| of the
pooled features between ptransfer and the plain loop (all sequences, all layers).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

GB1_DOMAIN = 56  # residues [0, 56) of FLIP's construct, as conf/task/gb1_*.yaml embeds them
REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "model" / "antiberty.yaml"
CB513 = REPO.parent / "shared" / "data" / "netsurfp_ss_test" / "CB513_HHblits.csv"
MAX_RESIDUES = 510  # AntiBERTy's 512 positions minus [CLS], [SEP]


def package_dir() -> Path:
    spec = importlib.util.find_spec("antiberty")
    if spec is None:
        sys.exit("AntiBERTy's weights are not installed: pip install --no-deps antiberty==0.1.3")
    return Path(list(spec.submodule_search_locations)[0]) / "trained_models"


class PlainLoop:
    """AntiBERTy's runner loop (see the module docstring), mean-pooling every layer."""

    def __init__(self, batch_size: int) -> None:
        from transformers import AutoModel, BertTokenizer

        self.model = AutoModel.from_pretrained(str(package_dir() / "AntiBERTy_md_smooth")).eval()
        self.tokenizer = BertTokenizer.from_pretrained(str(package_dir()), do_lower_case=False)
        self.batch_size = batch_size
        self.features: dict[str, torch.Tensor] = {}

    def __call__(self, sequences: list[str], precision: str) -> None:
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start: start + self.batch_size]
            inputs = self.tokenizer([" ".join(s) for s in batch], return_tensors="pt",
                                    padding=True)
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16,
                                                 enabled=precision == "bf16"):
                states = self.model(**inputs, output_hidden_states=True).hidden_states
            stacked = torch.stack(states, dim=1).float()  # B x n_layers x S x D
            for i, sequence in enumerate(batch):
                self.features[sequence] = stacked[i, :, 1: len(sequence) + 1].mean(dim=1)


class Ptransfer:
    """``model=antiberty`` loaded once; each call adds a chunk to this object's store."""

    def __init__(self, root: Path, precision: str, toks_per_batch: int) -> None:
        import hydra
        from omegaconf import OmegaConf

        from ptransfer.embed.store import EmbeddingStore, store_path
        from ptransfer.encoders.base import CheckpointRef

        self.encoder = hydra.utils.instantiate(OmegaConf.load(CONF), _convert_="all").load(
            CheckpointRef(), "pretrained", 0)
        identity = {"model": "antiberty", "precision": precision}
        self.store = EmbeddingStore(store_path(root, identity, "protein"), identity,
                                    self.encoder.n_layers, self.encoder.dim, level="protein")
        self.precision, self.toks_per_batch = precision, toks_per_batch

    def __call__(self, sequences: list[str], precision: str) -> None:
        from ptransfer.embed.extract import extract_to_store

        extract_to_store(self.encoder, sequences, self.store, self.toks_per_batch,
                         precision=precision, progress=False)


def largest_difference(store, plain: PlainLoop, sequences: list[str]) -> float:
    """max |ptransfer - plain| over every sequence and layer of the pooled features."""
    expected = torch.stack([plain.features[s] for s in sequences]).numpy()  # N x L x D
    found = np.stack([store.read_layer(layer, sequences) for layer in range(9)], axis=1)
    return float(np.abs(found - expected).max())


def _tools(args, work: Path) -> dict:
    from ptransfer.embed.extract import cpu_has_native_bf16

    precisions = ["fp32", "bf16"] if cpu_has_native_bf16() and not args.no_bf16 else ["fp32"]
    largest = max(args.plain_batch)
    tools = {("ptransfer", p): Ptransfer(work / p, p, args.toks_per_batch) for p in precisions}
    tools.update({(f"plain_b{b}", "fp32"): PlainLoop(b) for b in args.plain_batch})
    if "bf16" in precisions:
        tools[(f"plain_b{largest}", "bf16")] = PlainLoop(largest)
    return tools


def measure(args, sequences: list[str]) -> dict:
    """Interleaved timings (wall and CPU seconds) per (tool, precision), and the checks."""
    work = Path(tempfile.mkdtemp(prefix="bench_hf_", dir=args.workdir))
    try:
        tools = _tools(args, work)
        for (_, precision), tool in tools.items():  # warm-up outside the timings
            tool(sequences[:4], precision)
        wall = dict.fromkeys(tools, 0.0)
        cpu = dict.fromkeys(tools, 0.0)
        chunks = [sequences[i: i + args.chunk] for i in range(0, len(sequences), args.chunk)]
        for index, chunk in enumerate(chunks):
            order = list(tools) if index % 2 == 0 else list(tools)[::-1]
            for key in order:
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                tools[key](chunk, key[1])
                wall[key] += time.perf_counter() - start_wall
                cpu[key] += time.process_time() - start_cpu
            print(f"chunk {index + 1}/{len(chunks)}: " + ", ".join(
                f"{k[0]}/{k[1]} {v:.0f}s" for k, v in wall.items()), file=sys.stderr, flush=True)
        largest = max(args.plain_batch)
        checks = {f"max_abs_diff_{p}": largest_difference(
            tools[("ptransfer", p)].store, tools[(f"plain_b{largest}", p)], sequences)
            for (name, p) in tools if name == "ptransfer"}
        if ("ptransfer", "bf16") in tools:  # what bf16 does to the features themselves
            fp32, bf16 = (np.stack([tools[("ptransfer", p)].store.read_layer(8, sequences)])
                          for p in ("fp32", "bf16"))
            checks["last_layer_rel_diff_bf16_vs_fp32"] = float(
                np.linalg.norm(bf16 - fp32) / np.linalg.norm(fp32))
        return {"wall": wall, "cpu": cpu, "checks": checks}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_cb513(path: Path = CB513) -> list[str]:
    """CB513 proteins of at most 510 residues, in the file's order (residues space-separated)."""
    import csv

    if not path.is_file():
        sys.exit(f"CB513 not found at {path}")
    with open(path) as handle:
        sequences = [row["input"].replace(" ", "") for row in csv.DictReader(handle)]
    return [s for s in sequences if len(s) <= MAX_RESIDUES]


def run(args, splits: dict[str, list[str]]) -> dict:
    """The dataset's sequences (optionally ``--limit``) through every tool; residues/s, ratios."""
    torch.set_num_threads(args.threads)
    if args.dataset == "cb513":
        unique = list(dict.fromkeys(read_cb513()))
    else:
        unique = list(dict.fromkeys(s[:GB1_DOMAIN] for seqs in splits.values() for s in seqs))
    sequences = unique[: args.limit] if args.limit else unique
    measured = measure(args, sequences)
    residues = sum(map(len, sequences))
    results = {"dataset": args.dataset, "n_sequences": len(sequences), "residues": residues,
               "threads": args.threads,
               "toks_per_batch": args.toks_per_batch, "chunk": args.chunk,
               "torch": torch.__version__, **measured["checks"]}
    for clock in ("wall", "cpu"):
        seconds = measured[clock]
        results[clock] = {f"{name}/{p}": {"seconds": s, "res_per_s": residues / s}
                          for (name, p), s in seconds.items()}
        for (name, p), s in seconds.items():
            if name != "ptransfer":
                results[clock][f"{name}/{p}"]["ptransfer_speedup"] = s / seconds[("ptransfer", p)]
    return results


def report(results: dict) -> None:
    for clock in ("wall", "cpu"):
        for key, value in results[clock].items():
            speedup = value.get("ptransfer_speedup")
            extra = f" (ptransfer {speedup:.2f}x)" if speedup else ""
            print(f"{clock:>4} {key:>16}: {value['res_per_s']:7.0f} res/s{extra}")
    for key in results:
        if key.startswith("max_abs_diff"):
            print(f"{key}: {results[key]:.2e}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hf", choices=["antiberty"], default=None,
                        help="benchmark the HF BERT path (AntiBERTy, real weights) instead")
    parser.add_argument("--plain-batch", type=lambda s: [int(x) for x in s.split(",")],
                        default=[8, 32, 70], help="--hf: plain-loop batch sizes (comma list)")
    parser.add_argument("--no-bf16", action="store_true", help="--hf: fp32 only")
    parser.add_argument("--dataset", choices=["gb1", "cb513"], default="gb1",
                        help="--hf: GB1 domains (one length) or CB513 (20..510 residues)")
