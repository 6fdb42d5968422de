"""One-shot GPU benchmark: ESM-2 through fair-esm and transformers, probes on the GPU.

ESM-2 650M-architecture models with random weights (``random_init``: no download), built from
conf/model/esm2_t33_650M_UR50D.yaml (fair-esm ``EsmEncoder``) and
conf/model/hf_esm2_t33_650M_UR50D.yaml (transformers ``HfEncoder``, SDPA attention). Prints:

1. extraction throughput, all layers mean-pooled, through ``embed_sequences`` (token-budget
   batches) in bf16 autocast: real tokens/s (residues + <cls>/<eos>) and padded tokens/s
   (what the batches hold), on GB1-like (56 residues, the embedded domain) and ss3-like
   lengths (log-normal, median ~220, 30..1022);
2. the same in fp32 against fair-esm's own extract loop (scripts/extract.py's batching,
   ``model(toks, repr_layers=all)``, per-sequence means) on the same device: the ratio;
3. a 150M-class ESM-2 at batch 8 x 512 residues, bf16, every layer returned: real tokens/s;
4. peak GPU memory for one 1,022-residue sequence and one 4,000-residue sequence (windows of
   1,022, stride 511, averaged per residue);
5. ridge probes on 34 layers x 1,280 dims (gb1_sampled-sized: 6,289 train / 699 val), CUDA vs
   CPU, and the streaming ss3 probe (extract + per-layer ``StreamingRidgeClassifier``
   accumulation) in residues/s.

``--tiny`` runs the same code on 2-block, 32-dim models and small workloads on any device
(tests/test_bench_gpu.py runs it on the CPU); memory figures need CUDA and read n/a elsewhere.

    python scripts/bench_gpu.py                 # on a GPU machine, < 8 minutes on an H100
    python scripts/bench_gpu.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import esm
import hydra
import numpy as np
import torch
from esm.model.esm2 import ESM2
from omegaconf import OmegaConf

from ptransfer.embed.extract import embed_sequences, mean_pool, plan_batches
from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.esm import esm_n_params
from ptransfer.encoders.hf_families import hf_n_params
from ptransfer.heads import RidgeProbe, StreamingRidgeClassifier

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
AMINO = "ACDEFGHIKLMNPQRSTVWY"
FULL = {"gb1": (8733, 56), "ss3": 2000, "ridge": (34, 1280, 6289, 699), "batch": (8, 512, 20),
        "stream": 300, "toks": 16384}
TINY = {"gb1": (12, 56), "ss3": 4, "ridge": (3, 32, 200, 50), "batch": (2, 32, 1),
        "stream": 3, "toks": 2048}
TINY_ARCH = {"n_blocks": 2, "dim": 32, "heads": 4}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_sequences(lengths, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(AMINO), size=int(n))) for n in lengths]


def ss3_lengths(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(220), 0.6, size=n), 30, 1022).astype(int)


def model_cfg(name: str, tiny: bool) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    cfg.pop("defaults", None)
    if tiny:  # the same families, 2 blocks of width 32
        n, d, h = TINY_ARCH["n_blocks"], TINY_ARCH["dim"], TINY_ARCH["heads"]
        cfg.update(n_blocks=n, dim=d)
        if "repo_id" in cfg:
            cfg["arch"].update(num_hidden_layers=n, hidden_size=d, num_attention_heads=h,
                               intermediate_size=4 * d)
        else:
            cfg["arch"].update(num_layers=n, embed_dim=d, attention_heads=h)
        cfg["n_params"] = (hf_n_params(cfg["arch"], cfg["model_kwargs"]) if "repo_id" in cfg
                           else esm_n_params("esm2", cfg["arch"]))
    return cfg


def encoder(name: str, tiny: bool, device: str):
    cfg = model_cfg(name, tiny)
    built = hydra.utils.instantiate(OmegaConf.create(cfg), _convert_="all")
    return built.load(CheckpointRef(), "random_init", 0).to(device)


def extract_rate(enc, sequences, precision: str, toks: int) -> dict:
    """Real / padded tokens per second of ``embed_sequences`` + mean pooling, all layers."""
    lengths = [len(s) for s in sequences]
    padded = sum(len(b) * (max(lengths[i] for i in b) + 2) for b in plan_batches(lengths, toks))
    real = sum(lengths) + 2 * len(sequences)
    sync(enc.device.type)
    start = time.perf_counter()
    for _, feats in embed_sequences(enc, sequences, toks, precision=precision, progress=False):
        [mean_pool(f) for f in feats]
    sync(enc.device.type)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "real_tok_s": real / seconds, "padded_tok_s": padded / seconds}


def fair_esm_loop(arch: dict, sequences, toks: int, device: str) -> float:
    """fair-esm's extract loop (its own module, fp32, no autocast): seconds."""
    model = ESM2(alphabet="ESM-1b", **arch).eval().to(device)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    dataset = esm.data.FastaBatchedDataset([str(i) for i in range(len(sequences))], sequences)
    batches = dataset.get_batch_indices(toks, extra_toks_per_seq=1)
    loader = torch.utils.data.DataLoader(dataset, collate_fn=alphabet.get_batch_converter(1022),
                                         batch_sampler=batches)
    layers = list(range(model.num_layers + 1))
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for _, strs, tokens in loader:
            out = model(tokens.to(device), repr_layers=layers, return_contacts=False)
            reps = {k: v.to("cpu") for k, v in out["representations"].items()}
            for i, s in enumerate(strs):
                {k: v[i, 1: len(s) + 1].mean(0).clone() for k, v in reps.items()}
    sync(device)
    return time.perf_counter() - start


def batch_rate(enc, batch: int, length: int, repeats: int) -> float:
    """Real tokens/s of ``enc.embed`` on batches of ``batch`` x ``length``, bf16, all layers."""
    sequences = random_sequences([length] * batch, seed=5)
    device = enc.device.type
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        enc.embed(sequences)  # warm-up
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            enc.embed(sequences)
        sync(device)
    return repeats * batch * (length + 2) / (time.perf_counter() - start)


def peak_memory_gib(enc, length: int) -> float | None:
    if enc.device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    for _ in embed_sequences(enc, random_sequences([length], 7), 4096, precision="bf16",
                             progress=False):
        pass
    return torch.cuda.max_memory_allocated() / 2**30


def ridge_seconds(shape, device: str) -> float:
    n_layers, dim, n_train, n_val = shape
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(n_layers):
        X, Xv = rng.standard_normal((n_train, dim)), rng.standard_normal((n_val, dim))
        y, yv = X[:, 0] + rng.standard_normal(n_train), Xv[:, 0] + rng.standard_normal(n_val)
        RidgeProbe(device=device).fit(X.astype(np.float32), y, Xv.astype(np.float32), yv)
    sync(device)
    return time.perf_counter() - start


def streaming_rate(enc, n: int, toks: int, device: str) -> float:
    """Residues/s of the streaming ss3 probe's training pass: extract + accumulate per layer."""
    sequences = random_sequences(ss3_lengths(n, 11), seed=11)
    rng = np.random.default_rng(3)
    probes = [StreamingRidgeClassifier(device=device) for _ in range(enc.n_layers)]
    start = time.perf_counter()
    for _, feats in embed_sequences(enc, sequences, toks, precision="bf16", progress=False):
        stacked = torch.cat(list(feats), dim=1).numpy()  # n_layers x R x D
        labels = rng.integers(0, 3, size=stacked.shape[1])
        for layer, probe in enumerate(probes):
            probe.partial_fit(stacked[layer], labels)
    sync(device)
    return sum(map(len, sequences)) / (time.perf_counter() - start)


def run(tiny: bool, device: str) -> dict:
    sizes = TINY if tiny else FULL
    n_gb1, gb1_len = sizes["gb1"]
    workloads = {"gb1": random_sequences([gb1_len] * n_gb1, 1),
                 "ss3": random_sequences(ss3_lengths(sizes["ss3"], 2), 2)}
    results: dict = {"device": device, "tiny": tiny, "torch": torch.__version__}
    fair_arch = model_cfg("esm2_t33_650M_UR50D", tiny)["arch"]
    for family, name in (("fair-esm", "esm2_t33_650M_UR50D"),
                         ("transformers", "hf_esm2_t33_650M_UR50D")):
        enc = encoder(name, tiny, device)
        for work, seqs in workloads.items():
            bf16 = extract_rate(enc, seqs, "bf16", sizes["toks"])
            fp32 = extract_rate(enc, seqs, "fp32", sizes["toks"])
            loop = fair_esm_loop(fair_arch, seqs, sizes["toks"], device)
            results[f"{family}/{work}"] = {"bf16": bf16, "fp32": fp32, "fair_esm_loop_s": loop,
                                           "ratio_fp32_vs_loop": loop / fp32["seconds"]}
        results[f"{family}/peak_gib"] = {"1022": peak_memory_gib(enc, 1022),
                                         "4000_windowed": peak_memory_gib(enc, 4000)}
        if family == "transformers":
            results["streaming_ss3_res_s"] = streaming_rate(enc, sizes["stream"], sizes["toks"],
                                                            device)
        del enc
    batch, length, repeats = sizes["batch"]
    for family, name in (("fair-esm", "esm2_t30_150M_UR50D"),
                         ("transformers", "hf_esm2_t30_150M_UR50D")):
        results["batch_shape"] = f"{batch} x {length}"
        results[f"{family}/150M_batch_tok_s"] = batch_rate(encoder(name, tiny, device), batch,
                                                           length, repeats)
    results["ridge_s"] = {"cpu": ridge_seconds(sizes["ridge"], "cpu")}
    if device.startswith("cuda"):
        results["ridge_s"]["cuda"] = ridge_seconds(sizes["ridge"], device)
    return results


def report(results: dict) -> None:
    print(f"device {results['device']} (tiny={results['tiny']}), torch {results['torch']}")
    for key, value in results.items():
        if key.endswith(("/gb1", "/ss3")):
            print(f"{key:<22} bf16 {value['bf16']['real_tok_s']:>10.0f} real tok/s "
                  f"{value['bf16']['padded_tok_s']:>10.0f} padded tok/s | fp32 "
                  f"{value['fp32']['seconds']:.2f} s vs fair-esm loop "
                  f"{value['fair_esm_loop_s']:.2f} s: {value['ratio_fp32_vs_loop']:.2f}x")
        elif key.endswith("/peak_gib"):
            fmt = {k: ("n/a" if v is None else f"{v:.2f} GiB") for k, v in value.items()}
            print(f"{key:<22} 1,022 residues {fmt['1022']}, 4,000 windowed {fmt['4000_windowed']}")
        elif key.endswith("150M_batch_tok_s"):
            print(f"{key:<22} {value:>10.0f} real tok/s ({results['batch_shape']}, bf16, "
                  f"every layer)")
    ridge = results["ridge_s"]
    cuda = f"{ridge['cuda']:.2f} s ({ridge['cpu'] / ridge['cuda']:.1f}x)" if "cuda" in ridge \
        else "n/a"
    print(f"ridge, every layer: cpu {ridge['cpu']:.2f} s, cuda {cuda}")
    print(f"streaming ss3 probe: {results['streaming_ss3_res_s']:.0f} residues/s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2-block models, small workloads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.device == "cpu" and not args.tiny:
        parser.error("the full benchmark is for a GPU; use --tiny on the CPU")
    results = run(args.tiny, args.device)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
