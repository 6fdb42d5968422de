"""Dataset registry and downloader behind ``ptransfer data list | download NAME``.

Every file a task loader reads has one registry entry: its path under ``data.root``, the
public URL it comes from and its SHA-256. ``download`` fetches with urllib only, writes to
a temporary file beside the target, checks the hash and only then renames the file into
place, so an interrupted or corrupted download never leaves a file a loader would read.

Files whose checksum is not known (FLIP AAV, Meltome and SCL, which no offline copy
exists of) carry ``sha256=None``: they are accepted as downloaded and the computed
SHA-256 is logged with a warning that the file is unpinned; paste it into the registry to
pin it. Task loaders call :func:`require_file`, so a missing file raises the same
:class:`DataUnavailable` message a failed download does: which file to place where, and the
``ptransfer data download NAME`` command that fetches it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

ENV_MIRROR = "PTRANSFER_DATA_MIRROR"  # base URL that replaces every public source
DEFAULT_ROOT = "data"
TIMEOUT_S = 60
CHUNK_BYTES = 1 << 20

# FLIP files whose hash is pinned come from the commit the offline copies were taken at
# (../shared/data/SOURCES.md), so the URL keeps serving exactly the pinned bytes.
_FLIP_PINNED = "https://github.com/J-SNACKKB/FLIP/raw/62cace8735f5610e2743cf06ce0f944b37fffaa6"
_FLIP_MAIN = "https://github.com/J-SNACKKB/FLIP/raw/main"
_PS4 = (
    "https://github.com/omarperacha/ps4-dataset/raw/"
    "89cbd3802c06832b6c803bfe3eff0143bbe5d3e9/ps4_data/data"
)
_DCL = (
    "https://github.com/XinshaoAmosWang/DeepCriticalLearning/raw/"
    "3df42ac1ac3e21266a6e3c0945cd2723f8b7d6b3/dataset"
)


class DataUnavailable(FileNotFoundError):
    """A data file is neither on disk nor downloadable; the message says where to put it."""


class ChecksumMismatch(ValueError):
    """A downloaded file's SHA-256 differs from the registry's."""


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to data.root, '/'-separated
    url: str
    sha256: str | None  # None: not pinned (no known copy to take it from)


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    files: tuple[DataFile, ...]


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("gb1", "FLIP GB1 splits (gb1_* tasks)", (
            DataFile("flip_gb1/splits.zip", f"{_FLIP_PINNED}/splits/gb1/splits.zip",
                     "00a3c3d5be56ce35adfbec838db8ff549be369525e151a6978133da34b9fd86f"),
        )),
        Dataset("ss3", "FLIP secondary structure + NetSurfP CB513/TS115/CASP12 (ss3 task)", (
            DataFile("flip_secondary_structure/splits.zip",
                     f"{_FLIP_PINNED}/splits/secondary_structure/splits.zip",
                     "2e9bbbfd18a055bcac7edd4e059a6bf4bb35ca3ad8f8fa4fc3106422652a4726"),
            DataFile("netsurfp_ss_test/CB513_HHblits.csv", f"{_PS4}/cb513/CB513_HHblits.csv",
                     "829e357259fd132e945af4ea4ffa4233f135e886b749a2fc5111b41102537afc"),
            DataFile("netsurfp_ss_test/TS115_HHblits.csv", f"{_PS4}/ts115/TS115_HHblits.csv",
                     "4c1bc9ff1b83c4f26f1d7e3df9a5efaea3a450a5e1be34cc52b9c168774049b7"),
            DataFile("netsurfp_ss_test/CASP12_HHblits.csv", f"{_DCL}/CASP12_HHblits.csv",
                     "537535ecb4cb3dfa6f590a024e208ae15a955576ad758147b4e0605a8d7eecb9"),
        )),
        Dataset("aav", "FLIP AAV splits (aav_* tasks; checksum not pinned)", (
            DataFile("flip_aav/splits.zip", f"{_FLIP_MAIN}/splits/aav/splits.zip", None),
        )),
        Dataset("meltome", "FLIP Meltome splits (meltome_mixed; checksum not pinned)", (
            DataFile("flip_meltome/splits.zip", f"{_FLIP_MAIN}/splits/meltome/splits.zip", None),
        )),
        Dataset("scl", "FLIP subcellular localisation splits (scl_balanced; not pinned)", (
            DataFile("flip_scl/splits.zip", f"{_FLIP_MAIN}/splits/scl/splits.zip", None),
        )),
    )
}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def find_file(relative_path: str) -> tuple[Dataset, DataFile] | None:
    """The registry entry of a path under data.root, or None when no dataset ships it."""
    for dataset in DATASETS.values():
        for file in dataset.files:
            if file.path == relative_path:
                return dataset, file
    return None


def download_command(name: str, root: str | Path) -> str:
    root_flag = "" if Path(root) == Path(DEFAULT_ROOT) else f" --root {root}"
    return f"ptransfer data{root_flag} download {name}"


def placement_hint(file: DataFile, root: str | Path) -> str:
    """How a person gets ``file`` into ``root`` by hand (no network needed here)."""
    return f"download {file.url} by hand and place it at {Path(root) / file.path}"


def require_file(root: str | Path, relative_path: str) -> Path:
    """``root / relative_path`` if it is a file; else DataUnavailable saying how to get it."""
    path = Path(root) / relative_path
    if path.is_file():
        return path
    entry = find_file(relative_path)
    if entry is None:
        raise DataUnavailable(f"missing data file {path} (data.root={root}): place it there")
    dataset, file = entry
    raise DataUnavailable(
        f"missing data file {path} (data.root={root}): run "
        f"`{download_command(dataset.name, root)}`, or {placement_hint(file, root)}")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_datasets(root: str | Path = DEFAULT_ROOT, verify: bool = True) -> list[dict]:
    """Every registered dataset with its files' presence, sizes and checksums under ``root``.

    Returns dicts ``{name, description, present, damaged, size, files}``; ``present`` is True
    when every file exists, ``damaged`` when a present file's SHA-256 differs from the
    registry's, ``size`` is the bytes on disk of the files present, and each of ``files`` is
    ``{path, url, sha256, present, size, verified}``: ``verified`` is True (SHA-256 matches),
    False (it differs: truncated or damaged) or None (missing, not pinned, or ``verify``
    off). The pinned files are small (GB1 1.2 MB, ss3 4.8 MB), so listing hashes them.
    """
    entries = []
    for dataset in DATASETS.values():
        files = []
        for file in dataset.files:
            target = Path(root) / file.path
            present = target.is_file()
            verified = (sha256_of(target) == file.sha256
                        if present and verify and file.sha256 else None)
            files.append({"path": file.path, "url": file.url, "sha256": file.sha256,
                          "present": present, "size": target.stat().st_size if present else 0,
                          "verified": verified})
        entries.append({"name": dataset.name, "description": dataset.description,
                        "present": all(f["present"] for f in files),
                        "damaged": any(f["verified"] is False for f in files),
                        "size": sum(f["size"] for f in files), "files": files})
    return entries


def root_line(root: str | Path) -> str:
    """The first line of ``ptransfer data list``: which folder it looked in."""
    path = Path(root).expanduser()
    where = f"data root {path} ({path.resolve()})" if not path.is_absolute() else \
        f"data root {path}"
    if not path.is_dir():
        return (f"{where}: does not exist, so every dataset below is missing (a typo? set "
                f"data.root=DIR or --root DIR)")
    return where


def format_entry(entry: dict) -> str:
    """A ``list_datasets`` entry as the lines ``ptransfer data list`` prints."""
    state = "DAMAGED" if entry.get("damaged") else ("present" if entry["present"] else "missing")
    lines = [f"{entry['name']:<8} {state:<8} {entry['size'] / 1e6:8.1f} MB  {entry['description']}"]
    for file in entry["files"]:
        verified = file.get("verified")
        mark = "--" if not file["present"] else ("BAD" if verified is False else "ok")
        if verified is True:
            note = "SHA-256 verified"
        elif verified is False:
            note = (f"SHA-256 differs from the pinned one: truncated or damaged; "
                    f"`ptransfer data download {entry['name']} --force` replaces it")
        elif file["present"]:
            note = "not verified: " + ("SHA-256 UNPINNED" if not file["sha256"] else "not checked")
        else:
            note = "SHA-256 pinned" if file["sha256"] else "SHA-256 UNPINNED"
        lines.append(f"    [{mark}] {file['path']}  ({note})")
    return "\n".join(lines)


def source_url(file: DataFile, mirror: str | None) -> str:
    """The URL to fetch: the mirror's ``<mirror>/<relative path>`` when one is given."""
    return file.url if not mirror else f"{mirror.rstrip('/')}/{file.path}"


def download(name: str, root: str | Path = DEFAULT_ROOT, mirror: str | None = None,
             force: bool = False) -> list[Path]:
    """Fetch dataset ``name`` into ``root``; returns the paths of all its files.

    ``mirror`` (or env ``PTRANSFER_DATA_MIRROR``) replaces each URL by
    ``mirror.rstrip('/') + '/' + relative_path``; ``file://`` mirrors work too. A file
    already present with the pinned hash is skipped unless ``force``.
    Raises DataUnavailable (unreachable URL: names it and where to place the file by hand)
    or ChecksumMismatch (names the file, expected and actual hash; nothing is left behind).
    """
    dataset = get_dataset(name)
    mirror = mirror or os.environ.get(ENV_MIRROR) or None
    paths = []
    for file in dataset.files:
        target = Path(root) / file.path
        if not force and _already_present(target, file):
            paths.append(target)
            continue
        _fetch(file, target, source_url(file, mirror), root)
        paths.append(target)
    return paths


def _already_present(target: Path, file: DataFile) -> bool:
    if not target.is_file():
        return False
    if file.sha256 is None:
        log.info("%s present (checksum not pinned, not re-downloaded)", target)
        return True
    actual = sha256_of(target)
    if actual == file.sha256:
        log.info("%s present, SHA-256 ok", target)
        return True
    log.warning("%s present but its SHA-256 %s differs from %s: downloading again",
                target, actual, file.sha256)
    return False


def _make_folders(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _fetch(file: DataFile, target: Path, url: str, root: str | Path) -> None:
    """Stream ``url`` into a temp file beside ``target``, verify, then rename atomically.

    A failed download leaves nothing: the temp file is removed, and so are the folders made
    for it (``data/flip_gb1/`` stayed behind, empty, after an offline ``data download``).
    """
    made = _make_folders(target.parent)
    try:
        _fetch_into(file, target, url, root)
    except BaseException:
        for folder in reversed(made):
            with contextlib.suppress(OSError):  # not empty: another file landed there
                folder.rmdir()
        raise


def _fetch_into(file: DataFile, target: Path, url: str, root: str | Path) -> None:
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.",
                                         suffix=".part", delete=False)
    tmp = Path(handle.name)
    try:
        with handle:
            actual = _stream(url, handle, file, root)
            handle.flush()
            os.fsync(handle.fileno())
        if file.sha256 is not None and actual != file.sha256:
            raise ChecksumMismatch(f"{file.path} from {url}: SHA-256 mismatch, expected "
                                   f"{file.sha256}, got {actual}; the download was discarded")
        # NamedTemporaryFile creates 0600; give the file the mode a plain open() would
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if file.sha256 is None:
        log.warning("%s is not pinned: its SHA-256 is %s (add it to ptransfer.data.DATASETS "
                    "to pin it)", target, actual)
    log.info("downloaded %s -> %s", url, target)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _stream(url: str, sink, file: DataFile, root: str | Path) -> str:
    """Copy the response body of ``url`` into ``sink``; returns its SHA-256 hex digest."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            total = response.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      desc=file.path, disable=None) as bar:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    digest.update(chunk)
                    sink.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError,
            ConnectionError) as err:
        reason = (f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError)
                  else getattr(err, "reason", err))
        raise DataUnavailable(
            f"could not download {url} ({reason}); {placement_hint(file, root)} "
            f"(or set a mirror: --mirror / {ENV_MIRROR})") from err
    return digest.hexdigest()


def split_root_option(argv: list[str]) -> tuple[str, list[str]]:
    """(data root, the other arguments) of a ``ptransfer data`` command line.

    The root may be given as ``data.root=DIR`` (the override every other command takes),
    ``--root DIR`` or ``--root=DIR``, before or after the action; the last one wins.
    """
    root, rest, items = DEFAULT_ROOT, [], iter(argv)
    for item in items:
        if item.startswith(("data.root=", "--root=")):
            root = item.partition("=")[2]
        elif item == "--root":
            root = next(items, None)
            if not root:
                raise ValueError("--root needs a directory: ptransfer data list --root DIR")
        else:
            rest.append(item)
    return root, rest
