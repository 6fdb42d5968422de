"""Extraction: batching, windows, truncation, precision, OOM split, pooling, store filling."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest
import torch
from extract_fakes import FakeEncoder, make_sequences, reference_features

from ptransfer.embed import extract
from ptransfer.embed.extract import (
    embed_sequences,
    extract_to_store,
    flatten_pool,
    mean_pool,
    plan_batches,
    window_starts,
)
from ptransfer.embed.store import EmbeddingStore
from ptransfer.encoders.base import CheckpointRef


def collect(encoder, sequences, **kwargs) -> dict[int, torch.Tensor]:
    kwargs.setdefault("progress", False)
    out = {}
    for indices, features in embed_sequences(encoder, sequences, **kwargs):
        for index, per_seq in zip(indices, features):
            assert index not in out, "a sequence was yielded twice"
            out[index] = per_seq
    return out


# ------------------------------------------------------------------ plan_batches
def test_plan_batches_hand_case():
    # longest first: 10 (12 toks) + 8 (10) -> 2 x 12 = 24 <= 24; adding 5 would cost 36.
    assert plan_batches([5, 3, 10, 2, 8], toks_per_batch=24, extra_toks=2) == [[2, 4], [0, 1, 3]]


def test_plan_batches_over_budget_sequence_is_alone():
    assert plan_batches([100, 3, 3], toks_per_batch=20) == [[0], [1, 2]]


def test_plan_batches_respects_budget_and_covers_all():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500).tolist()
    batches = plan_batches(lengths, toks_per_batch=1000, extra_toks=2)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        padded = max(lengths[i] + 2 for i in batch) * len(batch)
        assert padded <= 1000
    # sorted by length: each batch's shortest is at least the next batch's longest
    for first, second in zip(batches, batches[1:]):
        assert min(lengths[i] for i in first) >= max(lengths[i] for i in second)


def test_plan_batches_rejects_bad_budget():
    with pytest.raises(ValueError, match="extract.toks_per_batch"):
        plan_batches([3], toks_per_batch=0)


def test_plan_batches_empty():
    assert plan_batches([], toks_per_batch=10) == []


# ------------------------------------------------------------------ windows
@pytest.mark.parametrize(("length", "window", "starts"), [
    (7, 4, [0, 2, 3]), (8, 4, [0, 2, 4]), (4, 4, [0]), (3, 4, [0]), (5, 1, [0, 1, 2, 3, 4]),
    (10, 5, [0, 2, 4, 5]),
])
def test_window_starts(length, window, starts):
    assert window_starts(length, window) == starts


def test_window_policy_averages_windows_by_hand():
    sequence = "ACDEFGH"  # 7 residues, max_len 4 -> windows [0,4) [2,6) [3,7)
    encoder = FakeEncoder(n_layers=2, dim=2, max_len=4)
    per_seq = collect(encoder, [sequence], length_policy="window")[0]
    assert per_seq.shape == (2, 7, 2)
    # layer 0 feature 1 is the position inside the window, averaged over covering windows
    expected_position = [0, 1, (2 + 0) / 2, (3 + 1 + 0) / 3, (2 + 1) / 2, (3 + 2) / 2, 3]
    np.testing.assert_allclose(per_seq[0, :, 1].numpy(), expected_position, rtol=1e-6)
    np.testing.assert_allclose(per_seq[0, :, 0].numpy(), [1, 2, 3, 4, 5, 6, 7])
    windows = [reference_features(sequence[s: s + 4], 2, 2)[1] for s in (0, 2, 3)]
    residue3 = (windows[0][3] + windows[1][1] + windows[2][0]) / 3
    np.testing.assert_allclose(per_seq[1, 3].numpy(), residue3, rtol=1e-6)
    assert max(encoder.batch_sizes) <= 3 and sum(encoder.batch_sizes) == 3


def test_truncate_policy_keeps_first_max_len_residues():
    sequence = "ACDEFGH"
    encoder = FakeEncoder(n_layers=2, dim=3, max_len=4)
    per_seq = collect(encoder, [sequence, "ACD"], length_policy="truncate")
    assert per_seq[0].shape == (2, 4, 3) and per_seq[1].shape == (2, 3, 3)
    np.testing.assert_allclose(per_seq[0].numpy(), reference_features("ACDE", 2, 3), rtol=1e-6)


def test_unknown_length_policy_is_rejected():
    with pytest.raises(ValueError, match="extract.length_policy"):
        collect(FakeEncoder(max_len=4), ["ACDEFG"], length_policy="crop")


def test_truncate_refused_for_residue_level_store(tmp_path):
    encoder = FakeEncoder(n_layers=2, dim=2, max_len=4)
    store = EmbeddingStore(tmp_path / "s.h5", {"model": "fake"}, 2, 2, level="residue")
    with pytest.raises(ValueError, match="extract.length_policy=truncate"):
        extract_to_store(encoder, ["ACD", "ACDEFGH"], store, length_policy="truncate",
                         progress=False)


def test_empty_sequence_is_rejected_by_index():
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        collect(FakeEncoder(), ["ACD", ""])


# ------------------------------------------------------------------ forward pass
def test_features_match_reference_regardless_of_batching():
    sequences = make_sequences(40, seed=1)
    encoder = FakeEncoder(n_layers=3, dim=4)
    per_seq = collect(encoder, sequences, toks_per_batch=60)
    assert sorted(per_seq) == list(range(40))
    assert len(encoder.batch_sizes) > 5  # really batched
    for index, sequence in enumerate(sequences):
        assert per_seq[index].dtype == torch.float32
        np.testing.assert_allclose(per_seq[index].numpy(),
                                   reference_features(sequence, 3, 4), rtol=1e-6)
    assert all(encoder.inference_mode_seen)


def test_oom_splits_batch_in_halves_and_retries():
    sequences = make_sequences(9, seed=2, low=10, high=12)
    encoder = FakeEncoder(oom_above=2)
    per_seq = collect(encoder, sequences, toks_per_batch=10_000)
    assert max(encoder.batch_sizes) <= 2 and sum(encoder.batch_sizes) == 9
    reference = collect(FakeEncoder(), sequences, toks_per_batch=10_000)
    for index in range(9):
        torch.testing.assert_close(per_seq[index], reference[index])


def test_oom_on_a_single_sequence_is_a_clear_error():
    with pytest.raises(RuntimeError, match="single sequence of 3 residues"):
        collect(FakeEncoder(oom_above=0), ["ACD"])


def test_half_precision_on_cpu_is_rejected():
    # fp16 has no CPU path; bf16 on the CPU: tests/test_bf16_cpu.py
    with pytest.raises(ValueError, match="extract.precision='fp16' needs a CUDA device"):
        collect(FakeEncoder(), ["ACD"], precision="fp16")


def test_unknown_precision_is_rejected():
    with pytest.raises(ValueError, match="extract.precision must be one of"):
        collect(FakeEncoder(), ["ACD"], precision="fp64")


def test_autocast_is_used_on_cuda(monkeypatch):
    calls = []

    @contextlib.contextmanager
    def recording_autocast(device_type, dtype):
        calls.append((device_type, dtype))
        yield

    monkeypatch.setattr(extract.torch, "autocast", recording_autocast)
    encoder = FakeEncoder(device="cuda")  # only reports the device; computes on the CPU
    per_seq = collect(encoder, ["ACDE", "FG"], precision="fp16")
    assert calls == [("cuda", torch.float16)]
    assert per_seq[0].dtype == torch.float32 and per_seq[0].device.type == "cpu"


# ------------------------------------------------------------------ pooling
def test_mean_pool_by_hand():
    per_seq = torch.tensor([[[1.0, 2.0], [3.0, 6.0]], [[0.0, 0.0], [2.0, -2.0]]])  # 2 x 2 x 2
    torch.testing.assert_close(mean_pool(per_seq), torch.tensor([[2.0, 4.0], [1.0, -1.0]]))


def test_mean_pool_rejects_empty():
    with pytest.raises(ValueError, match="L >= 1"):
        mean_pool(torch.zeros(2, 0, 3))


def test_flatten_pool_by_hand():
    per_seq = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # 1 layer x 2 residues x 2
    torch.testing.assert_close(flatten_pool(per_seq, pad_to=3),
                               torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0, 0.0]]))


def test_flatten_pool_rejects_too_long():
    with pytest.raises(ValueError, match="longer than pad_to=1"):
        flatten_pool(torch.zeros(1, 2, 2), pad_to=1)


# ------------------------------------------------------------------ extract_to_store
def test_extract_to_store_dedupes_and_resumes(tmp_path, caplog):
    sequences = make_sequences(12, seed=3)
    encoder = FakeEncoder(n_layers=3, dim=4)
    store = EmbeddingStore(tmp_path / "p.h5", {"model": "fake"}, 3, 4, level="protein")
    first = sequences[:5] + sequences[:5]  # duplicates embedded once
    with caplog.at_level(logging.INFO, logger="ptransfer.embed.extract"):
        assert extract_to_store(encoder, first, store, progress=False) == 5
    residues = sum(len(s) for s in sequences[:5])
    assert f"extracting 5 sequences ({residues} residues)" in caplog.text
    assert sum(encoder.batch_sizes) == 5
    assert extract_to_store(encoder, sequences, store, progress=False) == 7
    assert sum(encoder.batch_sizes) == 12 and len(store) == 12
    assert extract_to_store(encoder, sequences, store, progress=False) == 0
    assert sum(encoder.batch_sizes) == 12
    expected = np.stack([reference_features(s, 3, 4)[2].mean(0) for s in sequences[::-1]])
    np.testing.assert_allclose(store.read_layer(2, sequences[::-1]), expected, rtol=1e-5)


def test_extract_to_store_residue_level_with_windows(tmp_path):
    sequences = ["ACDEFGHIK", "LMN"]
    encoder = FakeEncoder(n_layers=2, dim=2, max_len=4)
    store = EmbeddingStore(tmp_path / "r.h5", {"model": "fake"}, 2, 2, level="residue")
    extract_to_store(encoder, sequences, store, progress=False)
    direct = collect(FakeEncoder(n_layers=2, dim=2, max_len=4), sequences)
    expected = torch.cat([direct[0][1], direct[1][1]]).numpy().astype(np.float16)
    np.testing.assert_array_equal(store.read_layer(1, sequences, dtype=None), expected)


def test_extract_to_store_flatten_pooling(tmp_path):
    encoder = FakeEncoder(n_layers=1, dim=2, pooling="flatten")
    store = EmbeddingStore(tmp_path / "f.h5", {"model": "fake"}, 1, 3 * 2, level="protein")
    extract_to_store(encoder, ["AC", "DEF"], store, progress=False)
    # layer 0 of "AC": residue A -> [1, 0], C -> [2, 1], zero padding for the third residue
    np.testing.assert_array_equal(store.read_layer(0, ["AC"]), [[1, 0, 2, 1, 0, 0]])


def test_extract_to_store_rejects_wrong_store_dim(tmp_path):
    store = EmbeddingStore(tmp_path / "d.h5", {"model": "fake"}, 3, 5, level="protein")
    with pytest.raises(ValueError, match="dim=5"):
        extract_to_store(FakeEncoder(n_layers=3, dim=4), ["ACD"], store, progress=False)


def test_extract_to_store_rejects_wrong_store_layers(tmp_path):
    store = EmbeddingStore(tmp_path / "l.h5", {"model": "fake"}, 2, 4, level="protein")
    with pytest.raises(ValueError, match="n_layers=2"):
        extract_to_store(FakeEncoder(n_layers=3, dim=4), ["ACD"], store, progress=False)


# ------------------------------------------------------------------ real encoders (tiny)
def tiny_encoder(family: str, path, **overrides):
    from tiny_models import model_config

    config = model_config(family, weights=str(path), **overrides)
    module_name, class_name = config.pop("_target_").rsplit(".", 1)
    encoder_class = getattr(__import__(module_name, fromlist=[class_name]), class_name)
    return encoder_class(**config).load(CheckpointRef(), "pretrained", 0)


def fair_esm_mean(path, sequences: list[str]) -> np.ndarray:
    """fair-esm's own forward, one sequence at a time (no padding): N x n_layers x D."""
    from argparse import Namespace

    import esm

    with torch.serialization.safe_globals([Namespace]):
        model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(path))
    model.eval()
    converter = alphabet.get_batch_converter()
    rows = []
    with torch.no_grad():
        for sequence in sequences:
            _, _, tokens = converter([("x", sequence)])
            layers = model(tokens, repr_layers=list(range(model.num_layers + 1)))
            reps = layers["representations"]
            rows.append(np.stack([reps[i][0, 1: len(sequence) + 1].mean(0).numpy()
                                  for i in sorted(reps)]))
    return np.stack(rows)


def test_tiny_esm2_store_matches_fair_esm(tmp_path, tiny_esm2_path):
    sequences = make_sequences(9, seed=4, low=5, high=60)  # mixed lengths: padded batches
    encoder = tiny_encoder("esm2", tiny_esm2_path)
    store = EmbeddingStore(tmp_path / "esm2.h5", {"model": encoder.name}, encoder.n_layers,
                           encoder.dim, level="protein")
    extract_to_store(encoder, sequences, store, toks_per_batch=150, progress=False)
    expected = fair_esm_mean(tiny_esm2_path, sequences)  # N x n_layers x D
    for layer in range(encoder.n_layers):
        np.testing.assert_allclose(store.read_layer(layer, sequences), expected[:, layer],
                                   atol=2e-5, rtol=1e-4)


def test_tiny_esm1b_windows_long_sequences(tmp_path, tiny_esm1b_path):
    encoder = tiny_encoder("esm1b", tiny_esm1b_path)  # 64 positions: max_len 62
    long_sequence = make_sequences(1, seed=5, low=100, high=101)[0]
    store = EmbeddingStore(tmp_path / "esm1b.h5", {"model": encoder.name}, encoder.n_layers,
                           encoder.dim, level="residue")
    extract_to_store(encoder, [long_sequence, "MKTAYIAK"], store, progress=False)
    starts = window_starts(100, 62)
    assert starts == [0, 31, 38]
    windows = [encoder.embed([long_sequence[s: s + 62]])[:, 0] for s in starts]
    total, count = torch.zeros(encoder.n_layers, 100, encoder.dim), torch.zeros(1, 100, 1)
    for start, window in zip(starts, windows):
        total[:, start: start + 62] += window
        count[:, start: start + 62] += 1
    expected = (total / count).numpy().astype(np.float16)
    np.testing.assert_allclose(store.read_sequence(long_sequence, dtype=None), expected,
                               atol=2e-3, rtol=2e-3)


def test_tiny_carp_rows_do_not_depend_on_batching(tmp_path, tiny_carp_path):
    sequences = make_sequences(6, seed=6, low=5, high=50)
    encoder = tiny_encoder("carp", tiny_carp_path)
    batched = collect(encoder, sequences, toks_per_batch=10_000)
    for index, sequence in enumerate(sequences):
        alone = encoder.embed([sequence])[:, 0]
        torch.testing.assert_close(batched[index], alone, atol=1e-5, rtol=1e-4)


def test_check_length_policy_allows_truncate_for_protein_level():
    encoder = FakeEncoder(max_len=4)
    extract.check_length_policy(encoder, ["ACDEFGH"], "truncate", "protein")
    extract.check_length_policy(encoder, ["ACD"], "truncate", "residue")  # nothing too long
    with pytest.raises(ValueError, match=r"1 sequences longer than fake's max_len=4"):
        extract.check_length_policy(encoder, ["ACD", "ACDEFGH"], "truncate", "residue")
