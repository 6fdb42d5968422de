"""A shard job of a multirun: embed one shard of one store, publish it, nothing else.

The sweeper plans each store's shards and writes each one's input next to the store
(``<shard>.todo.json``: the store, its identity and shape, the sequences still missing); the
job's config is a reading cell's config with ``extract.shard=<that file>``, so the encoder is
composed exactly as the cell composes it. The job checks that its config keys the same
store, then **claims the shard before it takes a device**: while another writer (a second
sweep on the same results folder) holds the shard, the job waits holding nothing, and when
that writer publishes it the job ends as ``adopted`` without a device. Only then does it
take a GPU slot (``sweep.devices``), load the model, embed and publish
(``embed.extract.extract_shard``). It records ``job_status.json``: state (``done``: this job
published the shard; ``adopted``: another writer did), shard, store, rows, device, seconds,
and the seconds it waited for the claim.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from ptransfer.cell.spec import cell_spec, encoder_spec
from ptransfer.embed.shards import read_todo
from ptransfer.embed.store_files import StoreError
from ptransfer.sweep.devices import acquire_device

log = logging.getLogger(__name__)

PHASE = "extract"


def _store_for(cfg: DictConfig, todo: dict):
    """The store of a shard job, after checking the job's config keys the same one."""
    from ptransfer.cell.key import encoder_identity
    from ptransfer.embed.store import EmbeddingStore, store_location

    path = Path(todo["store"])
    spec = cell_spec(cfg)
    expected, identity, dtype = store_location(spec.store_dir, encoder_identity(spec.encoder),
                                               todo["level"], spec.extract)
    if expected.absolute() != path.absolute() or identity != todo["identity"]:
        raise StoreError(f"{cfg.extract.shard}: the job's config keys the store {expected}, "
                         f"not {path}; re-run the sweep to plan its shards again")
    return EmbeddingStore(path, identity, int(todo["n_layers"]), int(todo["dim"]),
                          level=todo["level"], dtype=dtype, compression=todo.get("compression"),
                          commit_seconds=float(todo.get("commit_seconds", 120.0)))


def run_shard_job(cfg: DictConfig) -> dict:
    """Embed and publish the shard named by ``extract.shard``; returns the job's status."""
    from ptransfer.cell.encoder import load_encoder, pick_device
    from ptransfer.embed.extract import ExtractOptions, extract_shard, pooling_for
    from ptransfer.embed.publication import claim_or_wait, shard_state

    started = time.time()
    todo = read_todo(cfg.extract.shard)
    name = str(todo["shard"])
    status = {"phase": PHASE, "shard": name, "store": str(todo["store"]),
              "n_sequences": len(todo["sequences"]), "started": started}
    store = _store_for(cfg, todo)
    if shard_state(store.shard_dir, name, store) == "whole":
        log.info("shard %s of %s was published by another writer: adopted", name, store.path)
        return {**status, "state": "adopted", "device": None, "embedded": 0, "waited": 0.0}
    store.shard_dir.mkdir(parents=True, exist_ok=True)
    claim = claim_or_wait(store.shard_dir, name, store)  # waits holding no device
    waited = round(time.time() - started, 2)
    if claim is None:
        log.info("shard %s of %s was published by another writer while this job waited: "
                 "adopted", name, store.path)
        return {**status, "state": "adopted", "device": None, "embedded": 0, "waited": waited}
    try:
        with acquire_device(cfg, wants_gpu=True, what=f"shard {name}") as lease:
            log.info("shard %s: %d sequences for %s on device %s", name,
                     len(todo["sequences"]), store.path, lease.describe())
            encoder, _ = load_encoder(encoder_spec(cfg), pick_device(lease.torch_device))
            pool = pooling_for(encoder, todo["sequences"], store, None)
            options = ExtractOptions(int(cfg.extract.toks_per_batch),
                                     str(cfg.extract.length_policy),
                                     str(cfg.extract.precision), bool(cfg.extract.progress))
            wrote = extract_shard(encoder, store, name, todo["sequences"], pool, options,
                                  claim=claim)
            ended = time.time()  # before the device is released: [device_from, ended]
            record = lease.record()
    finally:
        claim.release()
    if shard_state(store.shard_dir, name, store) != "whole":
        raise StoreError(f"shard {name} of {store.path} was not published")
    state = "done" if wrote.published else "adopted"
    return {**status, "state": state, **record, "embedded": wrote.embedded, "ended": ended,
            "waited": waited, "seconds": round(ended - started, 2)}
