"""conf/model configs of the transformers families: one per published model, sizes that are
the built module's, each family's convention, and `plan` sizing them."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ptransfer.encoders.hf_families import hf_n_params

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
HUB_CONFIGS = sorted(p.stem for p in CONF_DIR.glob("model/*.yaml")
                     if "HfEncoder" in p.read_text())
# name -> (hub repo or None, model_type, blocks, dims, parameters as published, in millions)
PUBLISHED = {
    "prot_bert": ("Rostlab/prot_bert", "bert", 30, 1024, 420),
    "prot_t5_xl_uniref50": ("Rostlab/prot_t5_xl_uniref50", "t5", 24, 1024, 1208),
    "prot_t5_xl_half_uniref50_enc": ("Rostlab/prot_t5_xl_half_uniref50-enc", "t5", 24, 1024,
                                     1208),
    "ankh_base": ("ElnaggarLab/ankh-base", "t5", 48, 768, 453),
    "ankh_large": ("ElnaggarLab/ankh-large", "t5", 48, 1536, 1152),
    "antiberty": (None, "bert", 8, 512, 26),
    "hf_esm2_t6_8M_UR50D": ("facebook/esm2_t6_8M_UR50D", "esm", 6, 320, 7.4),
    "esmc_300m": ("biohub/ESMC-300M", "esmc", 30, 960, 332),
}


def load(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"))


def test_every_hub_series_has_a_config():
    expected = {f"hf_esm2_t{t}_UR50D" for t in ("6_8M", "12_35M", "30_150M", "33_650M",
                                                 "36_3B", "48_15B")}
    assert expected | {"esmc_300m", "esmc_600m"} | set(PUBLISHED) <= set(HUB_CONFIGS)


@pytest.mark.parametrize("name", HUB_CONFIGS)
def test_hub_config_is_consistent(name):
    cfg = load(name)
    arch = cfg["arch"]
    blocks = arch.get("num_hidden_layers", arch.get("num_layers"))
    dims = arch.get("hidden_size", arch.get("d_model"))
    assert cfg["n_blocks"] == blocks and cfg["dim"] == dims
    assert "revision" in cfg and cfg["revision"] is None and cfg["attn_implementation"] == "sdpa"
    assert set(cfg) >= {"tokenizer", "tokens", "repo_id", "max_len", "n_params"}
    if cfg["repo_id"]:
        assert cfg["repo_id"].split("/")[1].lower().replace("-", "_") in name.lower()
    else:
        assert cfg["package"]["install"].startswith("pip install")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_is_the_built_modules_and_the_published_size(name):
    repo, model_type, blocks, dims, millions = PUBLISHED[name]
    cfg = load(name)
    assert (cfg["repo_id"], cfg["arch"]["model_type"], cfg["n_blocks"], cfg["dim"]) == (
        repo, model_type, blocks, dims)
    assert cfg["n_params"] == hf_n_params(cfg["arch"], cfg["model_kwargs"])
    assert cfg["n_params"] / 1e6 == pytest.approx(millions, rel=0.03)


def test_each_family_states_its_model_card_convention():
    for name in ("prot_bert", "prot_t5_xl_uniref50", "prot_t5_xl_half_uniref50_enc"):
        assert load(name)["tokens"] == {"separator": " ",
                                        "replace": {"U": "X", "Z": "X", "O": "X", "B": "X"}}
    for name in ("ankh_base", "ankh_large"):
        assert load(name)["tokens"] == {"no_pre_tokenizer": True}
    assert load("antiberty")["tokens"] == {"separator": " ", "unknown": "XBZJUO"}
    assert load("prot_bert")["tokenizer"]["kwargs"] == {"do_lower_case": False}


def test_plan_sizes_every_new_model(tmp_path):
    from ptransfer.sweep.plan import plan_cells, plan_totals

    overrides = ["task=gb1_two_vs_rest", "model=prot_bert,prot_t5_xl_uniref50,ankh_base,"
                 "ankh_large,antiberty", f"results_dir={tmp_path}"]
    cells = plan_cells(CONF_DIR, overrides)
    assert len(cells) == 5 and all(c.gpu_seconds > 0 and c.disk_bytes > 0 for c in cells)
    by_model = {next(o for o in c.overrides if o.startswith("model=")): c for c in cells}
    # GPU time scales with parameters; disk with layers x dims (float32 pooled rows).
    assert by_model["model=prot_t5_xl_uniref50"].gpu_seconds > by_model[
        "model=antiberty"].gpu_seconds * 40
    assert by_model["model=antiberty"].disk_bytes == pytest.approx(8_733 * 9 * 512 * 4, rel=0.1)
    assert plan_totals(cells)["extractions"] == 5


def test_plan_agrees_with_run_when_a_swept_key_is_fixed_on_the_command_line(tmp_path):
    # `run -m +experiment=antiberty_ablations task=ss3` runs ss3 only (Hydra's basic sweeper
    # replaces the preset's task sweep); plan must count the same cells.
    from ptransfer.sweep.plan import plan_cells

    common = ["+experiment=antiberty_ablations", f"results_dir={tmp_path}"]
    cells = plan_cells(CONF_DIR, [*common, "task=ss3", "subsample={train: 10, val: 5}"])
    real = [c for c in cells if c.excluded is None]
    assert len(real) == 8 and all(c.cell_id.startswith("ss3__") for c in cells)
