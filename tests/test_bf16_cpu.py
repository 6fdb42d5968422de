"""extract.precision=bf16 on the CPU: allowed where the CPU computes bf16 natively, for every
encoder family; a clear error elsewhere; fp32 stays the default."""

from __future__ import annotations

import contextlib
import inspect

import hydra
import pytest
import torch
from hf_models import HF_FAMILIES, build_hf, hf_model_config, write_pretrained
from omegaconf import OmegaConf
from tiny_models import model_config

from ptransfer.embed import extract
from ptransfer.embed.extract import cpu_has_native_bf16, embed_sequences
from ptransfer.encoders.base import CheckpointRef

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIK", "WYLLK"]
FAIR_FAMILIES = ("esm1", "esm1b", "esm2", "carp")


@pytest.mark.parametrize(("text", "native"), [
    ("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n", True),
    ("flags\t\t: fpu avx512f amx_bf16 amx_tile\n", True),
    ("Features\t: fp asimd bf16 i8mm\n", True),
    ("flags\t\t: fpu avx2 avx512f avx512bw\n", False),
    ("model name\t: avx512_bf16 lookalike\nflags\t\t: fpu avx2\n", False),
])  # fmt: skip
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, text, native):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\n" + text)
    assert cpu_has_native_bf16(str(path)) is native


def test_no_cpuinfo_means_no_native_bf16(tmp_path):
    assert cpu_has_native_bf16(str(tmp_path / "absent")) is False


def test_fp32_is_the_default_precision():
    assert inspect.signature(embed_sequences).parameters["precision"].default == "fp32"


def _encoder(family: str, paths: dict):
    if family in HF_FAMILIES:
        config = hf_model_config(family, weights=str(paths[family]))
    else:
        config = model_config(family, weights=str(paths[family]))
    encoder = hydra.utils.instantiate(OmegaConf.create(config), _convert_="all")
    return encoder.load(CheckpointRef(), "pretrained", 0)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_bf16")
    return {f: write_pretrained(build_hf(f), root / f, f) for f in HF_FAMILIES}


@pytest.fixture()
def paths(tiny_esm2_path, tiny_esm1b_path, tiny_esm1_path, tiny_carp_path, hf_dirs):
    return {"esm2": tiny_esm2_path, "esm1b": tiny_esm1b_path, "esm1": tiny_esm1_path,
            "carp": tiny_carp_path, **hf_dirs}


def _features(encoder, precision: str) -> dict[int, torch.Tensor]:
    out = {}
    for indices, features in embed_sequences(encoder, SEQUENCES, precision=precision,
                                             progress=False):
        out.update(zip(indices, features))
    return out


def test_bf16_on_a_cpu_without_native_bf16_is_a_clear_error(monkeypatch, paths):
    monkeypatch.setattr(extract, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="extract.precision=bf16 on the CPU needs native bf16"):
        _features(_encoder("esm2", paths), "bf16")


@pytest.mark.parametrize("family", [*FAIR_FAMILIES, *HF_FAMILIES])
def test_bf16_autocast_on_the_cpu_for_every_family(monkeypatch, paths, family):
    # The capability is forced on, so the autocast path runs on any CPU (emulated or not).
    monkeypatch.setattr(extract, "cpu_has_native_bf16", lambda: True)
    calls = []
    real_autocast = torch.autocast

    @contextlib.contextmanager
    def recording_autocast(device_type, dtype):
        calls.append((device_type, dtype))
        with real_autocast(device_type=device_type, dtype=dtype):
            yield

    monkeypatch.setattr(extract.torch, "autocast", recording_autocast)
    encoder = _encoder(family, paths)
    full, half = _features(encoder, "fp32"), _features(encoder, "bf16")
    assert calls and set(calls) == {("cpu", torch.bfloat16)}
    for index, sequence in enumerate(SEQUENCES):
        assert half[index].dtype == torch.float32 and half[index].shape == full[index].shape
        assert half[index].shape[1] == len(sequence)
        # bf16 keeps 8 bits of mantissa: close to fp32, but not equal (autocast took effect)
        scale = full[index].abs().max()
        error = (half[index] - full[index]).abs().max()
        assert 0 < error <= 0.1 * scale, (family, float(error), float(scale))
