"""``ptransfer store verify``: read every block of every embedding store file, report damage.

Each dataset of a format-2 shard carries HDF5 Fletcher-32 checksums per chunk, so reading
every chunk checks every byte of data; layer values are also checked finite (rows are
refused at write time unless finite, so NaN/inf means damage, and it is the only evidence
in a format-1 store, which has no checksums). A shard with a manifest must also have the
size and SHA-256 its manifest records. The store's index file is checked against the shards
it maps (its layers are those shards' data, read once, there). Parts of an interrupted
writer are checked as well. A damaged shard is rebuilt by deleting it: the next run
re-extracts its rows. An HDF5 file that ptransfer did not write (no store attributes) is
listed as "not a ptransfer store" and left alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ptransfer.embed.diskspace import size_text
from ptransfer.embed.shards import SHARDS_SUFFIX, file_sha256, manifest_path, read_manifest
from ptransfer.embed.store_files import StoreError

OK, DAMAGED, UNCHECKED = "ok", "damaged", "unchecked"
FOREIGN = "foreign"
LABELS = {OK: "OK", DAMAGED: "DAMAGED", UNCHECKED: "UNCHECKED", FOREIGN: "NOT A STORE"}
STORE_ATTRIBUTES = ("identity", "level", "n_layers", "dim")  # what every store file carries
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class Verdict:
    path: Path
    state: str  # ok | damaged | unchecked (format 1: no checksums) | foreign (not a store)
    detail: str
    n_bytes: int


def store_files(root: Path) -> list[Path]:
    """Every HDF5 file under ``root`` (index files, shards, parts), sorted."""
    return sorted(p for p in Path(root).rglob("*.h5") if p.is_file())


def _check_dataset(dataset: h5py.Dataset) -> str | None:
    """None when every chunk reads (checksums pass) and layer values are finite."""
    layer = dataset.name.lstrip("/").startswith("layer_")
    slices = dataset.iter_chunks() if dataset.chunks else [()]
    for index, where in enumerate(slices):
        try:
            block = dataset[where]
        except OSError as err:
            first = where[0].start if where and isinstance(where[0], slice) else 0
            return f"dataset {dataset.name}: block {index} (from row {first}) unreadable: {err}"
        if layer and block.size and not np.isfinite(block).all():
            row = int(np.flatnonzero(~np.isfinite(block).all(axis=-1))[0])
            first = where[0].start if where else 0
            return f"dataset {dataset.name}: NaN/inf at row {first + row}"
    return None


def _ours(path: Path) -> bool:
    """Whether a file HDF5 cannot open was meant to be a store (signature, or our folder)."""
    try:
        with open(path, "rb") as handle:
            signed = handle.read(8) == HDF5_SIGNATURE
    except OSError:
        signed = False
    return signed or any(part.endswith(SHARDS_SUFFIX) for part in path.parts)


def verify_file(path: Path) -> Verdict:
    """Open ``path`` and read all of it; the verdict says what, if anything, is wrong."""
    path = Path(path)
    size = path.stat().st_size
    fix = f"; delete {path} and re-run to rebuild it"
    try:
        with h5py.File(path, "r") as handle:
            if not all(name in handle.attrs for name in STORE_ATTRIBUTES):
                return Verdict(path, FOREIGN, "not a ptransfer store (no store attributes): "
                               "skipped", size)
            if not bool(handle.attrs.get("complete", False)):
                return Verdict(path, DAMAGED, "not marked complete" + fix, size)
            if handle.attrs.get("layout") == "index":
                return _verify_index(path, handle, size)
            checksummed = True
            for name in sorted(handle):
                dataset = handle[name]
                checksummed &= bool(dataset.fletcher32)
                problem = _check_dataset(dataset)
                if problem:
                    return Verdict(path, DAMAGED, problem + fix, size)
            version = int(handle.attrs.get("format_version", 0))
    except OSError as err:
        if not _ours(path):
            return Verdict(path, FOREIGN, f"not a ptransfer store (not HDF5: {err}): skipped",
                           size)
        return Verdict(path, DAMAGED, f"cannot be read as HDF5 ({err})" + fix, size)
    problem = _manifest_problem(path, size)
    if problem:
        return Verdict(path, DAMAGED, problem + fix, size)
    if not checksummed:
        return Verdict(path, UNCHECKED, f"format {version} without checksums: read in full and "
                       "finite, but damage to its numbers cannot be detected; delete it and "
                       "re-run to rewrite it with checksums", size)
    return Verdict(path, OK, "every block's checksum matches", size)


def _manifest_problem(path: Path, size: int) -> str | None:
    """A shard's size and SHA-256 against its manifest (None: agree, or no manifest)."""
    manifest_file = manifest_path(path.parent, path.stem)
    if not path.parent.name.endswith(SHARDS_SUFFIX) or not manifest_file.exists():
        return None
    try:
        manifest = read_manifest(manifest_file)
    except StoreError as err:
        return str(err)
    if manifest.n_bytes != size:
        return f"{size} bytes but its manifest records {manifest.n_bytes}"
    if file_sha256(path) != manifest.sha256:
        return f"SHA-256 differs from the one its manifest {manifest_file.name} records"
    return None


def _verify_index(path: Path, handle: h5py.File, size: int) -> Verdict:
    """An index file: readable, and every shard it maps present with the size it lists."""
    try:
        listed = json.loads(handle.attrs.get("sources", "[]"))
        n_rows = len(handle["keys"])
    except (OSError, ValueError, KeyError) as err:
        return Verdict(path, DAMAGED, f"index unreadable ({err}); delete {path}: the next "
                       "reader writes it again", size)
    folder = path.with_name(path.name + SHARDS_SUFFIX)
    changed = [name for name, n_bytes in listed
               if not (folder / f"{name}.h5").is_file()
               or (folder / f"{name}.h5").stat().st_size != n_bytes]
    present = sorted(p.stem for p in folder.glob("*.h5")) if folder.is_dir() else []
    if changed or present != [name for name, _ in listed]:
        return Verdict(path, OK, f"index of {n_rows} rows is out of date (shards published or "
                       "removed since); the next reader rewrites it", size)
    return Verdict(path, OK, f"index of {n_rows} rows over {len(listed)} shard(s)", size)


def verify_path(path: str | Path, out=print) -> tuple[list[Verdict], float]:
    """Verify a folder of stores, one store (its index file and shards), or one file."""
    path = Path(path)
    if path.is_dir():
        return verify_dir(path, out)
    if not path.is_file():
        raise FileNotFoundError(f"no embedding store folder or file {path} (store_dir=, "
                                "default results/embeddings)")
    files = [path]
    folder = path.with_name(path.name + SHARDS_SUFFIX)
    if folder.is_dir():  # the store's index file: its shards (and parts) too
        files += store_files(folder)
    return _verify_files(files, path, out)


def verify_dir(root: str | Path, out=print) -> tuple[list[Verdict], float]:
    """Verify every store under ``root``, printing one line each; (verdicts, seconds)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no embedding store folder {root} (store_dir=, default "
                                "results/embeddings)")
    return _verify_files(store_files(root), root, out)


def _verify_files(files: list[Path], where: Path, out) -> tuple[list[Verdict], float]:
    started = time.perf_counter()
    verdicts = []
    for path in files:
        verdict = verify_file(path)
        verdicts.append(verdict)
        out(f"{LABELS[verdict.state]:9s} {path}: {verdict.detail}")
    seconds = time.perf_counter() - started
    counts = {state: sum(v.state == state for v in verdicts) for state in LABELS}
    total = sum(v.n_bytes for v in verdicts if v.state != FOREIGN)
    out(f"{len(verdicts) - counts[FOREIGN]} store files ({size_text(total)}) under {where} in "
        f"{seconds:.1f} s: {counts[OK]} ok, {counts[DAMAGED]} damaged, {counts[UNCHECKED]} "
        f"without checksums, {counts[FOREIGN]} not a ptransfer store")
    return verdicts, seconds
