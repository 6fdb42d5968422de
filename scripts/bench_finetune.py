"""Fine-tuning throughput and peak memory per tune mode, on a real model.

``python scripts/bench_finetune.py`` (defaults: ``model=antiberty``, real weights from
``pip install --no-deps antiberty==0.1.3``). Modes, each in a fresh child process so its
peak memory is its own:

- ``frozen``: the forward extraction runs (``encoder.embed``: every layer, inference mode);
- ``lora``: training steps of ``tune=lora`` (PEFT adapters r 8 on q/k/v/o + MLP head);
- ``full``: training steps of ``tune=full``;
- ``full_ckpt``: ``tune=full`` with ``tune.gradient_checkpointing=true``.

Training steps are the library's own (``tune.train.train_epoch`` on ``TuneNetwork``:
forward, loss, backward, gradient clipping, AdamW step), on token-budget batches of the
library's batching (``tune.data.make_batches``) of random sequences (``--length`` residues,
seeded). One warm-up batch, then ``--batches`` timed ones; ``--rounds`` repeats every mode
(order alternating between rounds, so all see the same machine load) and reports its fastest
round and largest peak. Printed per mode: residues/s
(real residues, padding and special tokens not counted) and peak memory: on CUDA
``torch.cuda.max_memory_allocated`` (all of it fine-tuning's), on the CPU the process's peak
resident set (``ru_maxrss``); and what fine-tuning adds over the loaded weights (CUDA: peak
minus the float32 weights; CPU: peak resident set minus the one after loading), next to
``tune.estimate``'s figure for it (gradients, AdamW state, activations of the largest batch);
and the bytes autograd saves for the backward pass of one forward (weights excluded), per
token, block and model dimension (the estimate's ``ACTIVATION_FACTOR`` x value bytes).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("frozen", "lora", "full", "full_ckpt")


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _encoder(model: str, device: str):
    import hydra
    from omegaconf import OmegaConf

    from ptransfer.encoders.base import CheckpointRef

    config = OmegaConf.load(REPO / "conf" / "model" / f"{model}.yaml")
    encoder = hydra.utils.instantiate(config, _convert_="all")
    return encoder.load(CheckpointRef(), "pretrained", 0).to(device)


def _step_function(mode: str, encoder, split, device: str):
    """``step(batches)``: extraction's forward (frozen) or the library's training steps."""
    import torch

    from ptransfer.tune.adapt import adapt
    from ptransfer.tune.data import TargetScale, batch_targets
    from ptransfer.tune.network import TuneNetwork
    from ptransfer.tune.spec import TuneSpec
    from ptransfer.tune.train import Context, train_epoch

    spec = TuneSpec(mode={"full_ckpt": "full"}.get(mode, mode),
                    gradient_checkpointing=mode == "full_ckpt")
    if mode == "frozen":
        def step(group):
            for batch in group:
                encoder.embed(batch.sequences)
        return step, spec, None
    adapt(encoder, spec, seed=0)
    network = TuneNetwork(encoder, "protein", 1, spec.head_dropout).to(device)
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad],
                                  lr=1e-4)
    bf16 = device.startswith("cuda")
    context = Context(torch.device(device), torch.bfloat16 if bf16 else None, False)

    def step(group):
        targets = [batch_targets(b, split, "protein", "regression", TargetScale())
                   for b in group]
        train_epoch(network, optimizer, group, targets, "regression", spec, 1e-4,
                    list(range(len(group))), 0, context, mode)
    return step, spec, (network, context)


def _saved_bytes(network, context, batch) -> int:
    """Bytes of the tensors autograd saves for the backward pass of one forward (weights
    excluded): the activations the memory estimate counts."""
    import torch

    storages: dict[int, int] = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    network.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with context.autocast_context():
            network(batch)
    weights = {p.untyped_storage().data_ptr() for p in network.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in weights)


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    """One mode in this process: residues/s and peak memory."""
    import numpy as np
    import torch

    from ptransfer.embed.batching import Batching
    from ptransfer.tasks.base import Split
    from ptransfer.tune.data import make_batches
    from ptransfer.tune.estimate import estimate_tune

    torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    encoder = _encoder(args.model, device)
    rng = np.random.default_rng(0)
    n = (args.batches + 1) * max(1, args.toks_per_batch // (args.length + 2))
    sequences = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=args.length))
                 for _ in range(n)]
    split = Split(sequences, rng.normal(size=n))
    batches = make_batches(split, Batching(args.toks_per_batch, encoder.max_len))
    warm, timed = batches[:1], batches[1:args.batches + 1]
    import peft  # noqa: F401 - imported (and AdamW's lazy imports done) before the baseline
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    loaded = _rss_bytes()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    step, spec, trained = _step_function(mode, encoder, split, device)
    step(warm)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    step(timed)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    residues = sum(b.n_residues for b in timed)
    result = {"mode": mode, "device": device, "residues_per_s": residues / seconds,
              "seconds": seconds, "residues": residues, "batches": len(timed)}
    if device.startswith("cuda"):  # everything on the GPU: weights and fine-tuning's own
        result["peak_bytes"] = torch.cuda.max_memory_allocated()
        result["over_weights_bytes"] = result["peak_bytes"] - 4 * encoder.n_params
    else:  # the process: Python, libraries, weights, then what fine-tuning adds to them
        result["peak_bytes"], result["over_weights_bytes"] = _rss_bytes(), _rss_bytes() - loaded
    if trained is not None:
        tokens = max(len(b.sequences) * (max(b.covered) + 2) for b in timed)
        first = len(warm[0].sequences) * (max(warm[0].covered) + 2)
        saved = _saved_bytes(*trained, warm[0])
        result["saved_bytes_per_token_block_dim"] = saved / (first * encoder.n_blocks
                                                               * encoder.dim)
        estimate = estimate_tune(spec.mode, encoder.n_params, encoder.n_blocks, encoder.dim,
                                 tokens, 0, 0, 0, 1, 1, bf16=device.startswith("cuda"),
                                 gradient_checkpointing=spec.gradient_checkpointing)
        result["estimate_bytes"] = estimate.state_bytes + estimate.activation_bytes
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="antiberty", help="a conf/model name")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--toks-per-batch", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per mode")
    parser.add_argument("--length", type=int, default=120, help="residues per sequence")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs per mode, order alternating; the fastest is reported")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child, args)))
        return
    print(f"model={args.model} length={args.length} toks_per_batch={args.toks_per_batch} "
          f"batches={args.batches} threads={args.threads}")
    print(f"{'mode':<10} {'device':<6} {'residues/s':>11} {'peak GB':>8} "
          f"{'over weights GB':>15} {'estimated GB':>12} {'saved B/token/block/D':>21}")
    results: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    for round_ in range(args.rounds):  # alternate the order: each mode sees the same load
        for mode in (args.modes if round_ % 2 == 0 else args.modes[::-1]):
            results[mode].append(_child(mode, args))
    for mode, runs in results.items():
        r = max(runs, key=lambda run: run["residues_per_s"])
        peak = max(run["peak_bytes"] for run in runs)
        over = max(run["over_weights_bytes"] for run in runs)
        estimate = (f"{r['estimate_bytes'] / 1e9:12.2f}" if "estimate_bytes" in r
                    else f"{'-':>12}")
        saved = r.get("saved_bytes_per_token_block_dim")
        saved = f"{saved:21.1f}" if saved is not None else f"{'-':>21}"
        rates = "/".join(f"{run['residues_per_s']:.0f}" for run in runs)
        print(f"{mode:<10} {r['device']:<6} {r['residues_per_s']:11.0f} {peak / 1e9:8.2f} "
              f"{over / 1e9:15.2f} {estimate} {saved}   (rounds: {rates})")


def _child(mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", mode,
               *[f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                 if k not in ("child", "modes", "rounds")]]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{mode}: failed\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

if __name__ == "__main__":
    main()
