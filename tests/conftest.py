"""Shared fixtures: an isolated torch hub per test, and tiny checkpoints in real formats."""

from __future__ import annotations

import pytest
import torch
from tiny_models import write_tiny


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run in about a millisecond; on a shared CPU, OpenMP threads spin-waiting
    for busy cores make them take hundreds. One thread keeps every test fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def isolated_torch_home(tmp_path_factory, monkeypatch):
    """Point TORCH_HOME and HF_HOME at a fresh directory and forbid downloads, for every test.

    Nothing reaches ~/.cache/torch, a hub cache left by one test is invisible to the next,
    and code that would download fails at once with WeightsUnavailable instead of waiting
    on the network.
    """
    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("PTRANSFER_OFFLINE", "1")
    # The Hugging Face cache too: transformers models load from an empty, offline HF_HOME.
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The host's GPU pool (sweep/devices.py) lives outside results folders: one per test.
    monkeypatch.setenv("PTRANSFER_DEVICES_DIR", str(home / "devices"))
    return home


@pytest.fixture(scope="session")
def tiny_esm2_path(tmp_path_factory):
    """A perturbed 2-block ESM-2 in fair-esm's v2 format, with its contact regression file."""
    return write_tiny("esm2", tmp_path_factory.mktemp("tiny_esm2"))


@pytest.fixture(scope="session")
def tiny_esm1b_path(tmp_path_factory):
    """A perturbed 2-block ESM-1b in fair-esm's v1 (roberta_large) format."""
    return write_tiny("esm1b", tmp_path_factory.mktemp("tiny_esm1b"))


@pytest.fixture(scope="session")
def tiny_esm1_path(tmp_path_factory):
    """A perturbed 2-block ESM-1 in fair-esm's v1 (protein_bert_base) format."""
    return write_tiny("esm1", tmp_path_factory.mktemp("tiny_esm1"))


@pytest.fixture(scope="session")
def tiny_carp_path(tmp_path_factory):
    """A perturbed 2-block CARP in sequence-models' checkpoint format."""
    return write_tiny("carp", tmp_path_factory.mktemp("tiny_carp"))


@pytest.fixture()
def work(tmp_path, monkeypatch):
    """A fresh working directory for a command: the test's ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
