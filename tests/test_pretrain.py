"""`ptransfer pretrain`: masking, batching, schedule, training, checkpoint formats, resume."""

from __future__ import annotations

import logging
import math
import signal
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import SHARED_DATA, needs_data
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy import stats

from ptransfer.encoders.base import CheckpointRef
from ptransfer.pretrain import train as pretrain
from ptransfer.pretrain.adapters import CarpAdapter, EsmAdapter
from ptransfer.pretrain.corpus import load_pretrain_data, load_task, read_fasta
from ptransfer.pretrain.mlm import (
    CANONICAL,
    IGNORE_INDEX,
    MaskingRates,
    crop,
    mask_tokens,
    token_budget_batches,
)
from ptransfer.pretrain.train import WarmupDecay, run_pretrain

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
TINY_ESM = ["arch.num_layers=2", "arch.embed_dim=16", "arch.attention_heads=2"]
TINY_CARP = ["pretrain/arch=carp_small", "arch.n_layers=2", "arch.d_model=16", "arch.d_embed=8",
             "arch.r=4"]


def random_sequences(n: int, rng: np.random.Generator, low=12, high=48, alphabet=CANONICAL):
    """Sequences over a skewed residue distribution (something an MLM can learn quickly)."""
    weights = np.linspace(1.0, 8.0, len(alphabet))
    weights /= weights.sum()
    return ["".join(rng.choice(list(alphabet), size=int(rng.integers(low, high)), p=weights))
            for _ in range(n)]


def write_fasta(path: Path, sequences: list[str]) -> Path:
    path.write_text("".join(f">seq{i} description\n{s[:30]}\n{s[30:]}\n"
                            for i, s in enumerate(sequences)))
    return path


@pytest.fixture()
def fasta(tmp_path) -> Path:
    return write_fasta(tmp_path / "train.fasta", random_sequences(40, np.random.default_rng(0)))


def make_cfg(tmp_path: Path, fasta: Path, *overrides: str):
    """The real conf/pretrain.yaml, composed with tiny-model and tiny-schedule overrides."""
    base = [f"data.fasta={fasta}", "data.tasks=[]", "data.exclude_tasks=[]", f"results_dir={tmp_path / 'results'}",
            "data.max_len=40", "schedule.toks_per_batch=256", "schedule.max_steps=6",
            "schedule.warmup_steps=2", "schedule.checkpoints=[0,2,4]", "schedule.lr=3e-3",
            "schedule.save_every=100", "progress=false", "device=cpu"]
    carp = any(o.startswith("pretrain/arch=carp") for o in overrides)
    arch = [] if carp else TINY_ESM
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("pretrain", overrides=[*base, *arch, *overrides])


def out_dir(cfg) -> Path:
    return Path(cfg.out_dir)


# -- masking -------------------------------------------------------------------------------

def _big_batch(adapter, n=256, seed=0):
    sequences = random_sequences(n, np.random.default_rng(seed), low=100, high=400)
    return sequences, *adapter.tokenize(sequences)


@pytest.mark.parametrize("adapter_cls", [EsmAdapter, CarpAdapter])
def test_masking_statistics_are_15_80_10_10(adapter_cls):
    arch = {"name": "carp_t" if adapter_cls is CarpAdapter else "esm2_t"}
    adapter = adapter_cls(arch)
    _, tokens, maskable = _big_batch(adapter)
    inputs, targets = mask_tokens(tokens, maskable, adapter.mask_idx, adapter.canonical_ids,
                                  MaskingRates(), torch.Generator().manual_seed(1))
    selected = targets != IGNORE_INDEX
    n_real, n_sel = int(maskable.sum()), int(selected.sum())  # ~64k residues, ~9.6k selected
    assert abs(n_sel / n_real - 0.15) < 0.005
    assert torch.equal(targets[selected], tokens[selected])
    masked = selected & (inputs == adapter.mask_idx)
    replaced = selected & (inputs != tokens) & (inputs != adapter.mask_idx)
    kept = selected & (inputs == tokens)
    # a random draw equals the original residue 1 time in 20: replaced 9.5 %, kept 10.5 %
    assert abs(int(masked.sum()) / n_sel - 0.80) < 0.015
    assert abs(int(replaced.sum()) / n_sel - 0.095) < 0.01
    assert abs(int(kept.sum()) / n_sel - 0.105) < 0.01
    # nothing outside real residues changes or carries a target (BOS, EOS, padding)
    assert torch.equal(inputs[~maskable], tokens[~maskable])
    assert not selected[~maskable].any()
    assert not (inputs == adapter.mask_idx)[~selected].any()


def test_random_replacements_are_uniform_over_the_20_canonical_residues():
    adapter = EsmAdapter({"name": "esm2_t"})
    _, tokens, maskable = _big_batch(adapter, n=512)
    rates = MaskingRates(select=0.5, to_mask=0.0, to_random=1.0)
    inputs, targets = mask_tokens(tokens, maskable, adapter.mask_idx, adapter.canonical_ids,
                                  rates, torch.Generator().manual_seed(2))
    drawn = inputs[targets != IGNORE_INDEX]
    counts = torch.stack([(drawn == i).sum() for i in adapter.canonical_ids]).numpy()
    assert counts.sum() == len(drawn)  # only canonical residues are drawn
    assert stats.chisquare(counts).pvalue > 1e-3


def test_every_sequence_gets_a_target_even_when_short():
    adapter = CarpAdapter({"name": "carp_t"})
    tokens, maskable = adapter.tokenize(["A", "CD", "EFG", "K"] * 50)
    _, targets = mask_tokens(tokens, maskable, adapter.mask_idx, adapter.canonical_ids,
                             MaskingRates(), torch.Generator().manual_seed(3))
    assert ((targets != IGNORE_INDEX).sum(dim=1) >= 1).all()
    assert not (targets != IGNORE_INDEX)[~maskable].any()


def test_masking_is_reproducible_from_the_generator_seed():
    adapter = EsmAdapter({"name": "esm2_t"})
    _, tokens, maskable = _big_batch(adapter, n=8)
    runs = [mask_tokens(tokens, maskable, adapter.mask_idx, adapter.canonical_ids,
                        MaskingRates(), torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_esm_tokens_wrap_residues_in_bos_and_eos():
    adapter = EsmAdapter({"name": "esm2_t"})
    tokens, maskable = adapter.tokenize(["ACD", "K"])
    a = adapter.alphabet
    pad = a.padding_idx
    assert tokens[1].tolist() == [a.cls_idx, a.get_idx("K"), a.eos_idx, pad, pad]
    assert maskable.tolist() == [[False, True, True, True, False],
                                 [False, True, False, False, False]]


@pytest.mark.parametrize("bad", [dict(select=0.0), dict(to_mask=0.95, to_random=0.1)])
def test_bad_masking_rates_are_rejected(bad):
    with pytest.raises(ValueError, match="mlm"):
        MaskingRates(**bad)


# -- cropping, batching, schedule ----------------------------------------------------------

def test_crop_keeps_short_sequences_and_windows_long_ones():
    rng = np.random.default_rng(0)
    assert crop("ACDE", 10, rng) == "ACDE"
    long = "".join(CANONICAL) * 5
    windows = {crop(long, 30, rng) for _ in range(20)}
    assert all(len(w) == 30 and w in long for w in windows)
    assert len(windows) > 1


def test_token_budget_batches_cover_everything_within_budget():
    lengths = np.random.default_rng(0).integers(5, 200, size=300)
    batches = token_budget_batches(lengths, 1024, 2, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(300))
    for batch in batches:
        assert len(batch) * (lengths[batch].max() + 2) <= 1024
    # length-bucketed: a batch spans a narrow length range, so little is padding
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert lengths.sum() / padded > 0.85
    again = token_budget_batches(lengths, 1024, 2, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_token_budget_batches_respect_max_batch_size():
    batches = token_budget_batches(np.full(10, 5), 10_000, 0, None, max_batch_size=4)
    assert [len(b) for b in batches] == [4, 4, 2]


def test_token_budget_too_small_for_one_sequence_is_an_error():
    with pytest.raises(ValueError, match="toks_per_batch=100"):
        token_budget_batches(np.array([10, 99]), 100, 2, None)


@pytest.mark.parametrize("decay,expected", [
    ("cosine", [0.25, 0.5, 1.0, 1.0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)), 0.1, 0.1]),
    ("linear", [0.25, 0.5, 1.0, 1.0, 0.1 + 0.9 * 0.75, 0.1, 0.1]),
])
def test_warmup_then_decay(decay, expected):
    schedule = WarmupDecay(warmup_steps=4, max_steps=12, decay=decay, min_ratio=0.1)
    assert [schedule(s) for s in (0, 1, 3, 4, 6, 12, 20)] == pytest.approx(expected)


def test_checkpoint_steps_add_the_final_step_and_drop_later_ones(caplog):
    with caplog.at_level(logging.WARNING):
        steps = pretrain.checkpoint_steps({"max_steps": 50, "checkpoints": [100, 0, 10, 10]})
    assert steps == [0, 10, 50]
    assert "beyond max_steps=50 dropped: [100]" in caplog.text


# -- data ----------------------------------------------------------------------------------

def test_read_fasta_joins_lines_and_upper_cases(tmp_path):
    path = tmp_path / "a.fasta"
    path.write_text(">one first\nacde\nFGH\n\n>two\nKL\n")
    assert read_fasta(path) == [("one first", "ACDEFGH"), ("two", "KL")]


@pytest.mark.parametrize("text,message", [
    ("ACDE\n>x\nAC\n", r"a.fasta:1: sequence line before the first '>'"),
    (">x\nAC1D\n", r"record 'x': characters \['1'\] are not residues"),
    (">x\n>y\nAC\n", r"record 'x': empty sequence"),
    ("", "no FASTA records"),
])
def test_bad_fasta_is_an_error_naming_file_and_record(tmp_path, text, message):
    path = tmp_path / "a.fasta"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_fasta(path)


def test_missing_fasta_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.fasta"):
        read_fasta(tmp_path / "nope.fasta")


def _toy_task_dir(tmp_path: Path, train: list[str], test: list[str]) -> Path:
    """A conf/task-style folder whose 'toy' task is built in memory by ptransfer's dataclasses."""
    def split(seqs):
        return {"_target_": "ptransfer.tasks.base.Split", "sequences": seqs,
                "targets": [0.0] * len(seqs)}
    task = {"_target_": "ptransfer.tasks.base.Task", "name": "toy", "level": "protein",
            "kind": "regression", "dataset": "toy", "metric": "spearman",
            "splits": {"train": split(train), "val": split(train[:2]), "test": split(test)}}
    folder = tmp_path / "task_conf"
    folder.mkdir()
    OmegaConf.save(OmegaConf.create(task), folder / "toy.yaml")
    return folder


def _data_cfg(**overrides) -> dict:
    cfg = {"root": "unused", "tasks": [], "splits": ["train"], "fasta": None,
           "exclude_tasks": [], "exclude_fasta": [], "task_conf_dir": None, "max_len": 20,
           "val_fraction": 0.1, "max_val_sequences": 500, "split_seed": 0}
    return {**cfg, **overrides}


def test_test_set_sequences_are_removed_and_counted(tmp_path, caplog):
    rng = np.random.default_rng(0)
    train = random_sequences(30, rng)
    extra = random_sequences(10, rng)
    test = [train[3], train[7].lower(), "ACDEFGHIK"]  # two shared with train (case-insensitive)
    held_out = write_fasta(tmp_path / "held_out.fasta", [extra[0], extra[1]])
    fasta = write_fasta(tmp_path / "extra.fasta", extra + [train[0]])  # one duplicate
    cfg = _data_cfg(tasks=["toy"], task_conf_dir=str(_toy_task_dir(tmp_path, train, test)),
                    fasta=str(fasta), exclude_fasta=[str(held_out)], max_len=1000)
    with caplog.at_level(logging.INFO):
        data = load_pretrain_data(cfg)
    kept = data.train + data.val
    assert not {train[3], train[7], extra[0], extra[1]} & set(kept)
    assert data.n_removed == 4
    assert sorted(kept) == sorted(set(train + extra) - {train[3], train[7], extra[0], extra[1]})
    assert len(data.val) == 4  # round(0.1 * 36)
    assert "1 duplicates dropped, 4 removed as test-set sequences (toy/test: 2" in caplog.text


def test_exclude_tasks_only_remove_their_test_sets(tmp_path):
    train = random_sequences(20, np.random.default_rng(1))
    fasta = write_fasta(tmp_path / "x.fasta", train)
    conf = _toy_task_dir(tmp_path, ["ACDEFG", "KLMNPQ", "RSTVWY"], [train[0], train[1]])
    data = load_pretrain_data(_data_cfg(fasta=str(fasta), exclude_tasks=["toy"],
                                        task_conf_dir=str(conf)))
    assert data.n_removed == 2 and len(data.train) + len(data.val) == 18
    assert "ACDEFG" not in data.train


def test_validation_split_is_seeded(tmp_path):
    fasta = write_fasta(tmp_path / "x.fasta", random_sequences(50, np.random.default_rng(2)))
    a, b = (load_pretrain_data(_data_cfg(fasta=str(fasta))) for _ in range(2))
    c = load_pretrain_data(_data_cfg(fasta=str(fasta), split_seed=1))
    assert a.val == b.val and a.digest == b.digest
    assert a.val != c.val


def test_unknown_task_is_an_error_naming_the_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.tasks: no task config .*nope.yaml"):
        load_pretrain_data(_data_cfg(tasks=["nope"], task_conf_dir=str(tmp_path)))


def test_missing_split_is_an_error(tmp_path):
    conf = _toy_task_dir(tmp_path, ["ACDEFG", "KLMNPQ"], ["RSTVWY"])
    with pytest.raises(ValueError, match="data.splits: task 'toy' has no split 'train2'"):
        load_pretrain_data(_data_cfg(tasks=["toy"], splits=["train2"], task_conf_dir=str(conf)))


def test_no_sequences_is_an_error():
    with pytest.raises(ValueError, match="set data.fasta and/or data.tasks"):
        load_pretrain_data(_data_cfg())


def test_everything_excluded_is_an_error(tmp_path):
    fasta = write_fasta(tmp_path / "x.fasta", ["ACDEFG", "KLMNPQ"])
    with pytest.raises(ValueError, match="0 left after exclusion"):
        load_pretrain_data(_data_cfg(fasta=str(fasta), exclude_fasta=[str(fasta)]))


@needs_data("flip_secondary_structure", "flip_gb1")
def test_default_pretraining_data_holds_no_test_protein_of_the_probed_tasks():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("pretrain", overrides=[f"data.root={SHARED_DATA}"])
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data = load_pretrain_data({**data_cfg, "max_len": 10_000})  # uncropped: exact comparison
    kept = set(data.train) | set(data.val)
    test = set()
    for name in ["ss3", *data_cfg["exclude_tasks"]]:
        task = load_task(name, data_cfg)
        test |= {s for split in task.test_sets for s in task.splits[split].sequences}
    assert len(test) > 8_000 and not test & kept
    ss3_train = set(load_task("ss3", data_cfg).splits["train"].sequences)
    # The one ss3 training protein holding a test chain (a 31-residue CB513 chain inside it;
    # found by the all-pairs loop of scripts/bench_overlap.py --brute) goes too.
    holder = "XMDPNCSCATDGSCSCAGSCKCKQCKCTSCKKSCCSCCPVGCAKCSQGCICKEASDKCSCCA"
    assert holder in ss3_train and any(t in holder for t in test)
    assert kept == ss3_train - test - {holder}
    assert len(data.val) == 485  # round(0.05 * 9,709 ss3 training proteins left)


# -- training, checkpoints, resume ---------------------------------------------------------

def _manifest(cfg) -> pd.DataFrame:
    return pd.read_csv(out_dir(cfg) / "manifest.csv")


@pytest.mark.parametrize("arch", [TINY_ESM, TINY_CARP], ids=["esm2", "carp"])
def test_training_lowers_the_loss(tmp_path, fasta, arch):
    cfg = make_cfg(tmp_path, fasta, *arch, "schedule.max_steps=30", "schedule.checkpoints=[0,10]",
                   "schedule.warmup_steps=3", "schedule.lr=1e-2")
    run_pretrain(cfg)
    rows = _manifest(cfg)
    assert rows.step.tolist() == [0, 10, 30]
    assert math.isnan(rows.train_loss[0])
    assert rows.train_loss[2] < rows.train_loss[1]
    assert rows.val_loss[2] < rows.val_loss[0] - 0.3
    assert rows.val_perplexity.tolist() == pytest.approx(np.exp(rows.val_loss).tolist())
    assert rows.tokens_seen.is_monotonic_increasing and rows.tokens_seen[0] == 0


def _trained_esm(tmp_path, fasta):
    cfg = make_cfg(tmp_path, fasta)
    run_pretrain(cfg)
    return cfg, out_dir(cfg) / "esm2_small_step4.pt"


def _module_at(cfg, step: int) -> torch.nn.Module:
    """Rebuild the trained module by re-running to ``step`` in memory (no file read)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    trainer = pretrain.Pretrainer(plain, load_pretrain_data(plain["data"]), Path("/nonexistent"))
    while trainer.progress.step < step:
        trainer.train_step(trainer.next_batch())
        trainer.progress.step += 1
    return trainer.module.eval()


def test_esm2_checkpoint_loads_with_fair_esm_and_reproduces_the_module(tmp_path, fasta):
    import esm.pretrained

    cfg, path = _trained_esm(tmp_path, fasta)
    assert path.with_name("esm2_small_step4-contact-regression.pt").is_file()
    data = torch.load(path, weights_only=False)
    assert vars(data["cfg"]["model"]) == {"encoder_layers": 2, "encoder_embed_dim": 16,
                                          "encoder_attention_heads": 2, "token_dropout": True}
    assert all(k.startswith("encoder.") for k in data["model"])
    with torch.serialization.safe_globals([Namespace]):
        loaded, alphabet = esm.pretrained.load_model_and_alphabet_local(str(path))
    trained = _module_at(cfg, 4)
    tokens, _ = EsmAdapter({"name": "esm2_small"}).tokenize(["ACDEFGHIKL", "MNPQ"])
    with torch.no_grad():
        expected, got = trained(tokens)["logits"], loaded.eval()(tokens)["logits"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    step0 = torch.load(out_dir(cfg) / "esm2_small_step0.pt", weights_only=False)["model"]
    key = "encoder.layers.0.fc1.weight"
    assert not torch.equal(step0[key], data["model"][key])  # it did train


def test_carp_checkpoint_loads_with_sequence_models_and_reproduces_the_module(tmp_path, fasta):
    from sequence_models.pretrained import load_model_and_alphabet

    cfg = make_cfg(tmp_path, fasta, *TINY_CARP)
    run_pretrain(cfg)
    path = out_dir(cfg) / "carp_small_step4.pt"
    loaded, collater = load_model_and_alphabet(str(path))  # torch.load, weights_only=True
    trained = _module_at(cfg, 4)
    tokens = collater([["ACDEFGHIKL"], ["MNPQ"]])[0]
    with torch.no_grad():
        expected = trained(tokens, repr_layers=[], logits=True)["logits"]
        got = loaded(tokens, repr_layers=[], logits=True)["logits"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("arch", [TINY_ESM, TINY_CARP], ids=["esm2", "carp"])
def test_model_yaml_sweeps_the_checkpoints_through_the_project_encoder(tmp_path, fasta, arch):
    cfg = make_cfg(tmp_path, fasta, *arch)
    run_pretrain(cfg)
    model_cfg = OmegaConf.load(out_dir(cfg) / "model.yaml")
    assert list(model_cfg.checkpoints) == ["step0", "step2", "step4", "final"]
    assert model_cfg.checkpoints.final.step == 6
    encoder = instantiate(model_cfg, _convert_="all")
    ref = CheckpointRef("step4", 4, model_cfg.checkpoints.step4.path)
    encoder.load(ref, ablation="pretrained", seed=0)
    assert encoder.n_params == sum(p.numel() for p in encoder.module_.parameters())
    features = encoder.embed(["ACDEFGHIKL", "MNPQ"])  # n_layers x B x T x D
    trained = _module_at(cfg, 4)
    assert features.shape == (3, 2, 10, 16)
    adapter_cls = EsmAdapter if model_cfg.family == "esm2" else CarpAdapter
    tokens, _ = adapter_cls({"name": model_cfg.name}).tokenize(["ACDEFGHIKL", "MNPQ"])
    with torch.no_grad():
        reps = trained(tokens, repr_layers=[2])["representations"][2]
    first = 1 if model_cfg.family == "esm2" else 0
    torch.testing.assert_close(features[2, 0], reps[0, first:first + 10], rtol=1e-5, atol=1e-5)


class _Killed(RuntimeError):
    pass


def _kill_on_call(monkeypatch, call: int) -> None:
    """Make the ``call``-th training step of this session die like a killed process."""
    real, calls = pretrain.Pretrainer.train_step, {"n": 0}

    def dying(trainer, sequences):
        calls["n"] += 1
        if calls["n"] == call:
            raise _Killed("simulated SIGKILL")
        return real(trainer, sequences)

    monkeypatch.setattr(pretrain.Pretrainer, "train_step", dying)


def _final_state(cfg) -> dict:
    return torch.load(out_dir(cfg) / "esm2_small_step6.pt", weights_only=False)["model"]


def _assert_same_run(full, resumed) -> None:
    """Same final weights; same manifest rows except wall seconds (and the folder)."""
    a, b = _final_state(full), _final_state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    left, right = _manifest(full), _manifest(resumed)
    for frame in (left, right):
        frame["path"] = frame.path.map(lambda p: Path(p).name)
    pd.testing.assert_frame_equal(left.drop(columns="seconds"), right.drop(columns="seconds"))


def test_resume_after_an_interruption_between_checkpoints(tmp_path, fasta, monkeypatch, caplog):
    # last.pt from save_every at step 3 lies between checkpoints 2 and 5: the running train
    # loss, the epoch position and the optimiser state must all come back
    extra = ["schedule.save_every=3", "schedule.checkpoints=[0,2,5]"]
    full = make_cfg(tmp_path / "full", fasta, *extra)
    run_pretrain(full)
    broken = make_cfg(tmp_path / "broken", fasta, *extra)
    _kill_on_call(monkeypatch, 5)
    with pytest.raises(_Killed):
        run_pretrain(broken)
    monkeypatch.undo()
    with caplog.at_level(logging.INFO):
        run_pretrain(broken)
    assert f"resuming from {out_dir(broken) / 'last.pt'} at step 3 of 6" in caplog.text
    _assert_same_run(full, broken)


KILLER = """
import os, signal, sys
import torch
from omegaconf import OmegaConf
from ptransfer.pretrain import train as pretrain

torch.set_num_threads(1)
real, calls = pretrain.Pretrainer.train_step, [0]

def dying(self, sequences):
    calls[0] += 1
    if calls[0] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, sequences)

pretrain.Pretrainer.train_step = dying
pretrain.run_pretrain(OmegaConf.load(sys.argv[1]))
"""


def test_resume_after_sigkill_ends_identical_to_an_uninterrupted_run(tmp_path, fasta, caplog):
    full = make_cfg(tmp_path / "full", fasta)
    run_pretrain(full)
    broken = make_cfg(tmp_path / "broken", fasta)
    OmegaConf.save(broken, tmp_path / "broken.yaml")
    (tmp_path / "killer.py").write_text(KILLER)
    command = [sys.executable, str(tmp_path / "killer.py"), str(tmp_path / "broken.yaml"), "6"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert (out_dir(broken) / "esm2_small_step4.pt").is_file()
    assert not (out_dir(broken) / "esm2_small_step6.pt").exists()
    assert not list(out_dir(broken).glob("*.tmp"))
    with caplog.at_level(logging.INFO):
        run_pretrain(broken)
    assert f"resuming from {out_dir(broken) / 'last.pt'} at step 4 of 6" in caplog.text
    _assert_same_run(full, broken)


def test_a_finished_run_does_nothing_and_says_so(tmp_path, fasta, caplog):
    cfg = make_cfg(tmp_path, fasta)
    run_pretrain(cfg)
    files = {p: p.stat().st_mtime_ns for p in out_dir(cfg).glob("*.*")}
    with caplog.at_level(logging.INFO):
        run_pretrain(cfg)
    assert "is complete (step 6 of 6, 4 checkpoints): nothing to do" in caplog.text
    assert files == {p: p.stat().st_mtime_ns for p in out_dir(cfg).glob("*.*")}


def test_resuming_with_a_different_config_is_refused(tmp_path, fasta):
    run_pretrain(make_cfg(tmp_path, fasta))
    changed = make_cfg(tmp_path, fasta, "schedule.lr=1e-4", "mlm.select=0.2")
    with pytest.raises(ValueError, match=r"different configuration \(differs in: mlm.select, "
                                         r"schedule.lr\)"):
        run_pretrain(changed)


def test_bf16_on_cpu_is_an_error(tmp_path, fasta):
    with pytest.raises(ValueError, match="precision=bf16 needs a CUDA device"):
        run_pretrain(make_cfg(tmp_path, fasta, "precision=bf16"))


def test_unknown_family_is_an_error(tmp_path, fasta):
    with pytest.raises(ValueError, match="arch.family='esm3'"):
        run_pretrain(make_cfg(tmp_path, fasta, "arch.family=esm3"))


def test_cli_runs_pretrain_through_hydra(tmp_path, fasta, monkeypatch):
    from ptransfer.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["pretrain", f"data.fasta={fasta}", "data.tasks=[]", "data.exclude_tasks=[]",
            "results_dir=res",
            "schedule.max_steps=2", "schedule.checkpoints=[0]", "data.max_len=40",
            "schedule.toks_per_batch=256", "progress=false", *TINY_ESM]
    assert main(argv) == 0
    rows = pd.read_csv(tmp_path / "res/pretrain/esm2_small/manifest.csv")
    assert rows.step.tolist() == [0, 2]
    assert rows.path[1] == "res/pretrain/esm2_small/esm2_small_step2.pt"


# -- configs -------------------------------------------------------------------------------

def test_default_pretrain_output_is_what_own_esm2_small_sweeps():
    """conf/model/own_esm2_small.yaml names exactly the files the default run writes."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        pre = compose("pretrain")
        grid = compose("config", overrides=["model=own_esm2_small"])
    adapter = EsmAdapter(OmegaConf.to_container(pre.arch))
    steps = pretrain.checkpoint_steps(OmegaConf.to_container(pre.schedule))
    out = Path(pre.out_dir)
    expected = {f"step{s}": {"path": str(out / adapter.file_name(s)), "step": s}
                for s in steps[:-1]}
    expected["final"] = {"path": str(out / adapter.file_name(steps[-1])), "step": steps[-1]}
    found = OmegaConf.to_container(grid.model.checkpoints, resolve=True)
    for entry in found.values():  # ${results_dir}/pretrain: results//pretrain is the same path
        entry["path"] = str(Path(entry["path"]))
    assert found == expected
    assert str(Path(grid.model.weights)) == expected["final"]["path"]
    assert OmegaConf.to_container(grid.model.arch) == adapter.constructor_args()
    encoder = instantiate(grid.model, _convert_="all")
    assert encoder.n_params == sum(p.numel() for p in adapter.build().parameters())
    assert encoder.max_len == pre.data.max_len


def test_own_checkpoints_experiment_sweeps_every_checkpoint():
    from ptransfer.sweep.plan import expand_sweep

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=own_checkpoints"],
                      return_hydra_config=True)
        model = compose("config", overrides=["model=own_esm2_small"]).model
        combos = expand_sweep(cfg, [])
    params = cfg.hydra.sweeper.params
    assert params.checkpoint.split(",") == list(model.checkpoints)
    assert set(params.model.split(",")) == {"own_esm2_small", "onehot"}
    assert set(params.ablation.split(",")) == {"pretrained", "random_init", "stat_transfer"}
    assert set(params.task.split(",")) == {"gb1_two_vs_rest", "gb1_low_vs_high", "gb1_sampled",
                                          "ss3"}
    assert len(combos) == 4 * 2 * len(model.checkpoints) * 3
