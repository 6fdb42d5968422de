"""Fine-tuning data: windows averaged differentiably, outputs in split order, accumulation
equal to one larger batch, per-residue fits over windowed sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tune_helpers import load, random_sequences, write_weights

from ptransfer.embed.batching import Batching, Piece
from ptransfer.tasks.base import IGNORE, Split, Task
from ptransfer.tune.adapt import adapt
from ptransfer.tune.data import (
    TargetScale,
    batch_targets,
    in_split_order,
    make_batches,
)
from ptransfer.tune.finetune import FineTuner
from ptransfer.tune.network import Batch, TuneNetwork, combine_pieces
from ptransfer.tune.spec import TuneSpec
from ptransfer.tune.train import Context, train_epoch


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("tune_weights"))


def test_windows_are_averaged_per_residue_and_pass_gradients():
    # sequence 0 (6 residues) in windows [0, 4) and [2, 6); sequence 1 (3 residues) whole
    pieces = [Piece(0, 0, 4), Piece(0, 2, 6), Piece(1, 0, 3)]
    features = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(3, 4, 2)  # P x Tp x D
    features.requires_grad_(True)
    states = combine_pieces(features, pieces, n_seq=2, width=6)
    f = features.detach()
    expected = torch.zeros(2, 6, 2)
    expected[0, 0:2] = f[0, 0:2]
    expected[0, 2:4] = (f[0, 2:4] + f[1, 0:2]) / 2  # covered by both windows
    expected[0, 4:6] = f[1, 2:4]
    expected[1, 0:3] = f[2, 0:3]
    assert torch.equal(states, expected)
    states.sum().backward()
    grad = torch.zeros(3, 4, 2)
    grad[0, :2], grad[0, 2:4], grad[1, :2], grad[1, 2:4], grad[2, :3] = 1, 0.5, 0.5, 1, 1
    assert torch.equal(features.grad, grad)  # padding (piece 2, position 3) gets none


def test_batches_keep_whole_sequences_and_outputs_return_in_split_order():
    split = Split(["AAAAAAAAAA", "KK", "RRRRR"], [np.array([0] * 10), np.array([1, IGNORE]),
                                                  np.array([2, 2, IGNORE, 2, 2])])
    batches = make_batches(split, Batching(toks_per_batch=12, max_len=6))
    assert sorted(r for b in batches for r in b.rows) == [0, 1, 2]
    first = next(b for b in batches if 0 in b.rows)
    assert [(p.start, p.end) for p in first.pieces if first.sequences[p.seq_index] ==
            split.sequences[0]] == [(0, 6), (3, 9), (4, 10)]  # windows in one batch
    assert first.covered[first.rows.index(0)] == 10
    # each residue's output = 100 x row + position: the order must come back exactly
    outputs = [torch.tensor([[100.0 * r + j] for r, n in zip(b.rows, b.covered)
                             for j in range(n)]) for b in batches]
    ordered = in_split_order(outputs, batches, split, "residue")
    expected = [j for j in range(10)] + [100] + [200, 201, 203, 204]
    assert ordered[:, 0].tolist() == expected
    truncated = make_batches(split, Batching(12, 6, "truncate"))
    assert max(c for b in truncated for c in b.covered) == 6
    with pytest.raises(ValueError, match="do not cover every residue"):
        in_split_order([torch.zeros(b.n_residues, 1) for b in truncated], truncated, split,
                       "residue")


def test_accumulated_forwards_make_the_step_of_one_larger_batch(weights):
    """Two forwards of two sequences accumulated = one forward of all four (plain SGD, so
    the step is the gradient itself)."""
    sequences = random_sequences(np.random.default_rng(0), 4, 10)
    split = Split(sequences, np.array([0.5, -1.0, 2.0, 0.0]))
    spec = TuneSpec(mode="full", max_grad_norm=0, head_dropout=0.0)
    after = []
    for accumulate, budget in ((2, 24), (1, 48)):
        encoder = load("esm2", weights)
        adapt(encoder, spec, seed=0)
        torch.manual_seed(0)
        network = TuneNetwork(encoder, "protein", 1, dropout=0.0)
        batches = make_batches(split, Batching(budget, encoder.max_len))
        assert len(batches) == accumulate
        targets = [batch_targets(b, split, "protein", "regression", TargetScale())
                   for b in batches]
        optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad],
                                    lr=1.0)
        step_spec = TuneSpec(mode="full", accumulate=accumulate, max_grad_norm=0)
        _, steps = train_epoch(network, optimizer, batches, targets, "regression",
                               step_spec, 1.0, list(range(len(batches))), 0,
                               Context(torch.device("cpu"), progress=False), "")
        assert steps == 1
        after.append({n: p.detach().clone() for n, p in network.named_parameters()})
    for name in after[0]:
        torch.testing.assert_close(after[0][name], after[1][name], rtol=1e-4, atol=1e-6)


def test_per_residue_fine_tuning_over_windows_predicts_every_labelled_residue(weights):
    """Sequences longer than max_len (8) are fine-tuned through overlapping windows."""
    rng = np.random.default_rng(1)

    def split(n: int) -> Split:
        sequences = random_sequences(rng, n, 14)
        labels = [np.array([int(c == "K") for c in s]) for s in sequences]
        labels[0][3] = IGNORE
        return Split(sequences, labels)

    task = Task("toy_residue", "residue", "classification",
                {"train": split(16), "val": split(6), "test": split(6)}, "toy", "accuracy",
                classes=["other", "K"])
    encoder = load("esm2", weights, max_len=8)
    spec = TuneSpec(mode="lora", max_epochs=2, learning_rates=(1e-2,), toks_per_batch=64)
    tuner = FineTuner(spec, seed=0, progress=False).fit(encoder, task)
    proba = tuner.predictions_["test"]
    assert proba.shape == (6 * 14 - 1, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert np.array_equal(tuner.targets_["test"],
                          np.concatenate(task.splits["test"].targets)[np.arange(84) != 3])
    with pytest.raises(ValueError, match="per-residue regression"):
        FineTuner(spec).fit(encoder, Task("r", "residue", "regression", task.splits, "toy",
                                          "spearman"))


def test_a_batch_runs_on_the_last_layer_with_padding_masked(weights):
    """Per protein, a sequence's prediction does not depend on the batch it is padded in."""
    encoder = load("antiberty", weights)
    adapt(encoder, TuneSpec(mode="full"), seed=0)
    torch.manual_seed(0)
    network = TuneNetwork(encoder, "protein", 1, dropout=0.0).eval()
    long, short = "ACDEFGHIKLMNPQRS", "MKV"

    def batch(sequences):
        return Batch(list(range(len(sequences))), sequences,
                     [Piece(i, 0, len(s)) for i, s in enumerate(sequences)],
                     [len(s) for s in sequences])

    with torch.no_grad():
        together = network(batch([long, short]))
        alone = network(batch([short]))
        states, mask = network.states(batch([long, short]))
    torch.testing.assert_close(together[1], alone[0], rtol=1e-5, atol=1e-6)
    reference = encoder.embed([short])[-1, 0]  # the last layer, as extraction stores it
    torch.testing.assert_close(states[1, :3], reference, rtol=1e-5, atol=1e-6)
    assert mask.tolist() == [[True] * 16, [True] * 3 + [False] * 13]
