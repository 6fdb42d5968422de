"""The downloader against a local http.server (127.0.0.1, ephemeral port, a thread)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
from cli_helpers import SHARED_DATA as SHARED
from cli_helpers import needs_data

from ptransfer import data
from ptransfer.data import ChecksumMismatch, DataFile, Dataset, DataUnavailable

needs_shared = needs_data("flip_gb1/splits.zip")
GB1_SHA = "00a3c3d5be56ce35adfbec838db8ff549be369525e151a6978133da34b9fd86f"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.delenv(data.ENV_MIRROR, raising=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def serve(directory: Path):
    """Start a server for ``directory``; returns (base URL, list of requested paths, stop)."""
    requests: list[str] = []

    class Handler(_QuietHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return f"http://127.0.0.1:{server.server_address[1]}/", requests, stop


@pytest.fixture
def shared_server():
    url, requests, stop = serve(SHARED)
    yield url, requests
    stop()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@needs_shared
def test_download_gb1_from_mirror(tmp_path, shared_server):
    url, requests = shared_server
    paths = data.download("gb1", tmp_path / "root", mirror=url)
    target = tmp_path / "root" / "flip_gb1" / "splits.zip"
    assert paths == [target]
    assert data.sha256_of(target) == GB1_SHA
    assert files_under(tmp_path / "root") == [target]  # no temp file left
    assert requests == ["/flip_gb1/splits.zip"]


@needs_shared
def test_downloaded_file_gets_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        data.download("gb1", tmp_path, mirror=SHARED.as_uri())
    finally:
        os.umask(old)
    assert (tmp_path / "flip_gb1" / "splits.zip").stat().st_mode & 0o777 == 0o644


@needs_shared
def test_present_file_with_right_hash_is_skipped(tmp_path, shared_server):
    url, requests = shared_server
    data.download("gb1", tmp_path, mirror=url)
    data.download("gb1", tmp_path, mirror=url)
    assert len(requests) == 1
    data.download("gb1", tmp_path, mirror=url, force=True)
    assert len(requests) == 2


@needs_shared
def test_present_file_with_wrong_hash_is_replaced(tmp_path, shared_server):
    url, requests = shared_server
    target = tmp_path / "flip_gb1" / "splits.zip"
    target.parent.mkdir()
    target.write_bytes(b"truncated")
    data.download("gb1", tmp_path, mirror=url)
    assert data.sha256_of(target) == GB1_SHA and len(requests) == 1


@needs_shared
def test_mirror_from_environment(tmp_path, shared_server, monkeypatch):
    url, requests = shared_server
    monkeypatch.setenv(data.ENV_MIRROR, url)
    data.download("gb1", tmp_path)
    assert requests == ["/flip_gb1/splits.zip"]


@needs_shared
def test_download_ss3_all_four_files(tmp_path, shared_server):
    url, _ = shared_server
    paths = data.download("ss3", tmp_path, mirror=url.rstrip("/"))
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        f.path for f in data.DATASETS["ss3"].files]
    for path, file in zip(paths, data.DATASETS["ss3"].files):
        assert data.sha256_of(path) == file.sha256 == data.sha256_of(SHARED / file.path)


@needs_shared
def test_file_url_mirror(tmp_path):
    data.download("gb1", tmp_path, mirror=SHARED.as_uri())
    assert data.sha256_of(tmp_path / "flip_gb1" / "splits.zip") == GB1_SHA


@needs_shared
def test_checksum_mismatch_leaves_nothing_behind(tmp_path, shared_server, monkeypatch):
    url, _ = shared_server
    wrong = "0" * 64
    monkeypatch.setitem(data.DATASETS, "gb1", Dataset("gb1", "test", (
        DataFile("flip_gb1/splits.zip", "https://example.invalid/splits.zip", wrong),)))
    with pytest.raises(ChecksumMismatch) as err:
        data.download("gb1", tmp_path, mirror=url)
    message = str(err.value)
    assert "flip_gb1/splits.zip" in message and wrong in message and GB1_SHA in message
    assert list(tmp_path.iterdir()) == []  # neither the temp file, the target nor its folder


def test_unreachable_mirror_says_where_to_place_the_file(tmp_path):
    mirror = closed_port_url()
    with pytest.raises(DataUnavailable) as err:
        data.download("gb1", tmp_path, mirror=mirror)
    message = str(err.value)
    assert f"could not download {mirror}/flip_gb1/splits.zip" in message
    assert data.DATASETS["gb1"].files[0].url in message
    assert f"place it at {tmp_path / 'flip_gb1' / 'splits.zip'}" in message
    assert list(tmp_path.iterdir()) == []  # issue 28 item 17: no empty flip_gb1/ left either


def test_missing_file_on_mirror_is_unavailable(tmp_path):
    (tmp_path / "empty_mirror").mkdir()
    url, requests, stop = serve(tmp_path / "empty_mirror")
    try:
        with pytest.raises(DataUnavailable, match=r"could not download .*flip_gb1/splits\.zip "
                                                  r"\(HTTP 404 "):
            data.download("gb1", tmp_path / "root", mirror=url)
    finally:
        stop()
    assert requests == ["/flip_gb1/splits.zip"]
    assert not (tmp_path / "root").exists()  # the folders it made for the file are gone


def test_unpinned_file_is_accepted_and_its_hash_logged(tmp_path, caplog):
    mirror_dir = tmp_path / "mirror"
    (mirror_dir / "flip_aav").mkdir(parents=True)
    payload = b"PK fake aav zip"
    (mirror_dir / "flip_aav" / "splits.zip").write_bytes(payload)
    url, _, stop = serve(mirror_dir)
    try:
        with caplog.at_level(logging.WARNING, logger="ptransfer.data"):
            paths = data.download("aav", tmp_path / "root", mirror=url)
    finally:
        stop()
    assert paths[0].read_bytes() == payload
    assert "not pinned" in caplog.text
    assert hashlib.sha256(payload).hexdigest() in caplog.text


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'gfp'; known: gb1, ss3, aav, "
                                         r"meltome, scl"):
        data.download("gfp", tmp_path)


def test_registry_shape():
    assert list(data.DATASETS) == ["gb1", "ss3", "aav", "meltome", "scl"]
    for dataset in data.DATASETS.values():
        for file in dataset.files:
            assert file.url.startswith("https://github.com/")
            assert file.sha256 is None or len(file.sha256) == 64
    assert data.DATASETS["gb1"].files[0].url.endswith("/splits/gb1/splits.zip")
    assert [f.sha256 for n in ("aav", "meltome", "scl") for f in data.DATASETS[n].files] == [
        None, None, None]


@needs_shared
def test_registry_hashes_match_the_offline_copies():
    for name in ("gb1", "ss3"):
        for file in data.DATASETS[name].files:
            assert data.sha256_of(SHARED / file.path) == file.sha256, file.path


@needs_shared
def test_list_datasets_on_the_offline_copies():
    entries = {e["name"]: e for e in data.list_datasets(SHARED)}
    assert list(entries) == ["gb1", "ss3", "aav", "meltome", "scl"]
    assert entries["gb1"]["present"] and entries["gb1"]["size"] == 1_241_473
    assert entries["ss3"]["present"]
    assert entries["ss3"]["size"] == 2_321_037 + 2_016_196 + 415_898 + 95_256
    assert not entries["aav"]["present"] and entries["aav"]["size"] == 0
    text = data.format_entry(entries["aav"])
    assert text.startswith("aav      missing") and "[--] flip_aav/splits.zip" in text
    assert "UNPINNED" in text
    assert "[ok] flip_gb1/splits.zip  (SHA-256 verified)" in data.format_entry(entries["gb1"])


def test_require_file_message(tmp_path):
    with pytest.raises(DataUnavailable) as err:
        data.require_file(tmp_path, "netsurfp_ss_test/TS115_HHblits.csv")
    message = str(err.value)
    assert f"missing data file {tmp_path / 'netsurfp_ss_test' / 'TS115_HHblits.csv'}" in message
    assert f"`ptransfer data --root {tmp_path} download ss3`" in message
    assert "ps4-dataset" in message
    present = tmp_path / "netsurfp_ss_test" / "TS115_HHblits.csv"
    present.parent.mkdir()
    present.write_text("input, dssp3\n")
    assert data.require_file(tmp_path, "netsurfp_ss_test/TS115_HHblits.csv") == present


def test_default_root_needs_no_root_flag():
    assert data.download_command("gb1", "data") == "ptransfer data download gb1"
    assert data.download_command("gb1", "data/") == "ptransfer data download gb1"


def test_list_verifies_pinned_checksums_and_names_a_missing_root(tmp_path, capsys):
    # Issue 19 item 14: a truncated pinned zip was listed [ok]; a typo'd root listed
    # everything "missing" without saying the root does not exist.
    from ptransfer.cli import main

    zipped = tmp_path / "flip_gb1" / "splits.zip"
    zipped.parent.mkdir()
    zipped.write_bytes(b"PK\x03\x04 cut short")
    entries = {e["name"]: e for e in data.list_datasets(tmp_path)}
    assert entries["gb1"]["damaged"] and entries["gb1"]["files"][0]["verified"] is False
    text = data.format_entry(entries["gb1"])
    assert text.startswith("gb1      DAMAGED") and "[BAD] flip_gb1/splits.zip" in text
    assert "ptransfer data download gb1 --force" in text
    assert main(["data", "list", f"data.root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"data root {tmp_path}" and "[BAD]" in out
    assert main(["data", "list", f"data.root={tmp_path / 'typo'}"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"data root {tmp_path / 'typo'}: does not exist")
    if (SHARED / "flip_gb1" / "splits.zip").is_file():  # the real copy: verified
        shutil.copy(SHARED / "flip_gb1" / "splits.zip", zipped)
        assert data.list_datasets(tmp_path)[0]["files"][0]["verified"] is True


def test_the_test_data_folder_can_be_set_by_environment(tmp_path):
    # Issue 19 item 17: a clone not beside ../shared/data runs the data tests with
    # PTRANSFER_TEST_DATA=/path/to/data (they skipped before).
    import os
    import subprocess
    import sys

    tests = Path(__file__).resolve().parent
    code = ("import cli_helpers, test_tasks_flip, test_pretrain; "
            "print(cli_helpers.SHARED_DATA, test_tasks_flip.SHARED, test_pretrain.SHARED_DATA)")
    env = {**os.environ, "PTRANSFER_TEST_DATA": str(tmp_path), "PYTHONPATH": str(tests)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [str(tmp_path)] * 3


_SKIP_REASONS = r"""
import importlib, sys
import pytest
found = {}
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    marks = list(getattr(module, "pytestmark", []))
    for value in vars(module).values():
        marks += getattr(value, "pytestmark", [])
        if isinstance(value, pytest.MarkDecorator):
            marks.append(value.mark)
    found[name] = sorted({m.kwargs.get("reason", "") for m in marks
                          if m.name == "skipif" and m.args and m.args[0] is True})
print(repr(found))
"""


def test_skip_reasons_name_the_data_folder_looked_in(tmp_path):
    # Issue 28 item 16: with PTRANSFER_TEST_DATA=/nonexist the skip reasons said
    # ../shared/data, and one test looked only there. Every module that reads the real data
    # skips, saying where it looked.
    import ast
    import subprocess
    import sys

    tests = Path(__file__).resolve().parent
    readers = sorted(p.stem for p in tests.glob("test_*.py")
                     if "SHARED_DATA" in p.read_text() and p.name != Path(__file__).name)
    missing = tmp_path / "nonexist"
    env = {**os.environ, "PTRANSFER_TEST_DATA": str(missing), "PYTHONPATH": str(tests)}
    out = subprocess.run([sys.executable, "-c", _SKIP_REASONS, *readers], env=env,
                         capture_output=True, text=True, check=True, cwd=tests).stdout
    reasons = ast.literal_eval(out.strip().splitlines()[-1])
    assert len(reasons) >= 8 and all(reasons.values()), reasons  # each module skips some
    for module, texts in reasons.items():
        for text in texts:
            assert f"{missing}/" in text and "PTRANSFER_TEST_DATA" in text, (module, text)
