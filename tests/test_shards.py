"""Shard planning: cuts by work (tokens, bytes) only where a batch ends, stable names, bit-identical
features whatever the number of shards and after a killed writer (a real tiny ESM-2)."""

from __future__ import annotations

import hydra
import numpy as np
import pandas as pd
import pytest
from extract_fakes import make_sequences
from tiny_models import model_config

from ptransfer.embed import extract
from ptransfer.embed.batching import Batching, plan_batches, split_into_pieces
from ptransfer.embed.extract import extract_to_store
from ptransfer.embed.shard_sizing import ShardSizing
from ptransfer.embed.shards import canonical_order, plan_shards, sequence_tokens, slice_by_tokens
from ptransfer.embed.store import EmbeddingStore
from ptransfer.encoders.base import CheckpointRef

MAX_LEN = 30  # windows for the longer sequences below


def _sequences() -> list[str]:
    return make_sequences(70, low=5, high=70, seed=3)  # lengths 5-69: some need windows


def _batches(sequences: list[str], batching: Batching) -> list[list[tuple[str, int, int]]]:
    """What the extractor runs: each batch as (sequence, start, end) of its pieces."""
    pieces = split_into_pieces(sequences, batching.max_len, batching.length_policy)
    return [[(sequences[pieces[i].seq_index], pieces[i].start, pieces[i].end) for i in batch]
            for batch in plan_batches([p.end - p.start for p in pieces], batching.toks_per_batch,
                                      groups=[p.seq_index for p in pieces])]


@pytest.mark.parametrize("policy", ["window", "truncate"])
def test_each_shard_runs_exactly_the_batches_of_one_writer(policy):
    batching = Batching(toks_per_batch=100, max_len=MAX_LEN, length_policy=policy)
    order = canonical_order(_sequences())
    slices = slice_by_tokens(order, 400, batching)
    assert len(slices) >= 5
    assert [s for piece in slices for s in piece] == order  # a partition, in order
    per_shard = [batch for piece in slices for batch in _batches(piece, batching)]
    assert per_shard == _batches(order, batching)
    for piece in slices:  # within budget unless a single batch is larger
        assert sum(sequence_tokens(s) for s in piece) <= 400 or len(_batches(piece, batching)) == 1


def test_cutting_by_tokens_alone_would_change_the_batches():
    # The reason for cutting between batches: a cut inside a batch changes its neighbours.
    batching = Batching(toks_per_batch=100, max_len=MAX_LEN)
    order = canonical_order(_sequences())
    naive = slice_by_tokens(order, 400)
    assert [b for piece in naive for b in _batches(piece, batching)] != _batches(order, batching)


def test_shard_names_depend_on_their_sequences_only():
    sequences = _sequences()
    batching = Batching(toks_per_batch=100, max_len=MAX_LEN)
    first = plan_shards("s.h5", sequences, frozenset(), 400, batching)
    again = plan_shards("s.h5", list(reversed(sequences)) + sequences[:5], frozenset(), 400,
                        batching)
    assert [s.name for s in first] == [s.name for s in again]
    assert len({s.name for s in first}) == len(first)
    done = {sequence_key_of(s) for s in first[1].todo}  # shard 1 published
    later = plan_shards("s.h5", sequences, frozenset(done), 400, batching)
    assert [s.name for s in later] == [s.name for i, s in enumerate(first) if i != 1]
    assert plan_shards("other.h5", sequences, frozenset(), 400, batching)[0].name != first[0].name


def sequence_key_of(sequence: str) -> str:
    from ptransfer.embed.store_files import sequence_key

    return sequence_key(sequence)


@pytest.fixture()
def tiny_esm2():
    encoder = hydra.utils.instantiate(model_config("esm2", max_len=MAX_LEN), _convert_="all")
    return encoder.load(CheckpointRef("final"), ablation="random_init", seed=0)


def _store(path, encoder) -> EmbeddingStore:
    return EmbeddingStore(path, {"model": "tiny"}, encoder.n_layers, encoder.dim,
                          level="residue", dtype="float16")


def _all_layers(store: EmbeddingStore, sequences: list[str]) -> list[np.ndarray]:
    return [store.read_layer(layer, sequences, dtype=None) for layer in range(store.n_layers)]


def test_features_are_bit_identical_with_one_or_many_shards_and_after_a_kill(
        tmp_path, tiny_esm2, monkeypatch):
    sequences = _sequences()
    options = {"toks_per_batch": 100, "progress": False}
    one = _store(tmp_path / "one.h5", tiny_esm2)
    extract_to_store(tiny_esm2, sequences, one, **options)  # one shard, one writer
    many = _store(tmp_path / "many.h5", tiny_esm2)
    extract_to_store(tiny_esm2, sequences, many, shard_tokens=400, **options)
    # Sized by bytes instead (extract.shard_max_gb): a fifth of the features a shard.
    by_bytes = _store(tmp_path / "by_bytes.h5", tiny_esm2)
    total = sum(map(len, sequences)) * by_bytes.n_layers * by_bytes.dim * 2  # float16
    extract_to_store(tiny_esm2, sequences, by_bytes, sizing=ShardSizing(max_gb=total / 5e9),
                     **options)
    assert len(one._shard_files()) == 1 and len(many._shard_files()) >= 5
    assert len(by_bytes._shard_files()) in (5, 6)
    expected = _all_layers(one, sequences)
    for other in (many, by_bytes):
        for got, want in zip(_all_layers(other, sequences), expected):
            np.testing.assert_array_equal(got, want)
    # A writer killed after its third batch (parts committed after every batch): the re-run
    # runs the unsaved batches as planned, and every row is what one writer computes.
    killed = _store(tmp_path / "killed.h5", tiny_esm2)
    real_forward, calls = extract._forward_splitting_on_oom, []

    def dies_after_three(*args):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real_forward(*args)

    monkeypatch.setattr(extract, "_forward_splitting_on_oom", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        extract_to_store(tiny_esm2, sequences, killed, flush_bytes=1, **options)
    monkeypatch.undo()
    assert len(killed) == 0  # nothing published by the killed writer
    assert extract_to_store(tiny_esm2, sequences, killed, **options) < len(sequences)
    for got, want in zip(_all_layers(_store(tmp_path / "killed.h5", tiny_esm2), sequences),
                         expected):
        np.testing.assert_array_equal(got, want)


def test_the_windows_of_a_sequence_stay_in_one_batch_when_they_fit():
    # Budget 130 tokens, rows of 32 (30 residues + BOS/EOS): X, A's two windows, B's two.
    lengths, groups = [30, 30, 30, 30, 30], [0, 1, 1, 2, 2]
    assert plan_batches(lengths, 130) == [[0, 1, 2, 3], [4]]  # B split across batches
    assert plan_batches(lengths, 130, groups=groups) == [[0, 1, 2], [3, 4]]
    # A sequence longer than a batch still spans batches (there is no other way).
    assert plan_batches([30] * 5, 70, groups=[0] * 5) == [[0, 1], [2, 3], [4]]


def _cell_values(results, *overrides: str, blas_threads: int) -> pd.DataFrame:
    """A one-block, 320-dim random-init ESM-2 cell on the synthetic task, its probes run
    under ``blas_threads`` BLAS threads: (layer, eval_set, metric) -> value, hparams."""
    from cell_helpers import cell_config
    from omegaconf import OmegaConf
    from threadpoolctl import threadpool_limits

    from ptransfer.cell.run import run_cell
    from ptransfer.encoders.esm import esm_n_params

    arch = {"num_layers": 1, "embed_dim": 320, "attention_heads": 4, "token_dropout": True}
    cfg = cell_config(results, "task=synthetic", "ablation=random_init", *overrides)
    OmegaConf.set_struct(cfg, False)
    cfg.model = OmegaConf.create(model_config("esm2", arch=arch, dim=320, n_blocks=1,
                                              n_params=esm_n_params("esm2", arch)))
    with threadpool_limits(blas_threads):
        rows = run_cell(cfg)
    return rows.set_index(["layer", "eval_set", "metric"])[["value", "hparams"]].sort_index()


def test_rows_are_bit_identical_with_one_or_many_shards(tmp_path):
    # Issue 28 item 8: a cell's rows differed by up to 7e-11 (27 of 56 values) between
    # extract.shard_tokens=3000 (7 shards) and one shard. Features are identical (above);
    # the probes' BLAS/LAPACK sums split by thread count, and a sweep's shard jobs and probes
    # run in processes whose thread count follows its job count. Probes now run on one BLAS
    # thread whatever the process has: rows do not depend on how the store was cut.
    one = _cell_values(tmp_path / "one", blas_threads=1)
    many = _cell_values(tmp_path / "many", "extract.shard_tokens=3000", blas_threads=2)
    shards = list((tmp_path / "many" / "embeddings").rglob("shard-*.h5"))
    assert len(list((tmp_path / "one" / "embeddings").rglob("shard-*.h5"))) == 1
    assert len(shards) >= 7
    assert one.index.equals(many.index) and (one.hparams == many.hparams).all()
    assert one.value.to_numpy().tobytes() == many.value.to_numpy().tobytes()
