"""``ptransfer store verify``: read every block of every embedding store file, report damage.

Each dataset of a format-2 shard carries HDF5 Fletcher-32 checksums per chunk, so reading
every chunk checks every byte of data; layer values are also checked finite (rows are
refused at write time unless finite, so NaN/inf means damage, and it is the only evidence
in a format-1 store, which has no checksums). Every file of a shard with a manifest must
also have the size and SHA-256 its manifest records (the shard file, and each part file of
a shard of several: ``embed.publication``). A file that a manifest, a shard file or an index
file lists but that is gone is reported **missing**: the next run that reads the store
extracts its rows again and publishes the shard with a fresh manifest. The store's index
file is checked against the shards it maps (its layers are those shards' data, read once,
there). Parts of an interrupted writer are checked as well. A damaged shard is rebuilt by
deleting it: the next run re-extracts its rows. An HDF5 file that ptransfer did not write
(no store attributes) is listed as "not a ptransfer store" and left alone.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ptransfer.embed.diskspace import size_text
from ptransfer.embed.manifests import file_sha256, manifest_path, read_manifest
from ptransfer.embed.publication import FILES_LAYOUT, FILES_SUFFIX
from ptransfer.embed.shards import MANIFEST_SUFFIX, SHARDS_SUFFIX, TODO_SUFFIX
from ptransfer.embed.store_files import StoreError

OK, DAMAGED, UNCHECKED = "ok", "damaged", "unchecked"
FOREIGN, MISSING = "foreign", "missing"
LABELS = {OK: "OK", DAMAGED: "DAMAGED", MISSING: "MISSING", UNCHECKED: "UNCHECKED",
          FOREIGN: "NOT A STORE"}
FAILING = (DAMAGED, MISSING)  # verdicts that make `ptransfer store verify` exit 1
REDO = ("re-run redoes it (the next run that reads this store extracts its rows again and "
        "publishes the shard with a fresh manifest; force=true re-runs finished cells)")
STORE_ATTRIBUTES = ("identity", "level", "n_layers", "dim")  # what every store file carries
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class Verdict:
    path: Path
    state: str  # ok | damaged | missing | unchecked (format 1: no checksums) | foreign
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
    """Whether a file HDF5 cannot open was meant to be a store (signature, our folder, or
    the index file beside a shard folder)."""
    try:
        with open(path, "rb") as handle:
            signed = handle.read(8) == HDF5_SIGNATURE
    except OSError:
        signed = False
    return (signed or any(part.endswith(SHARDS_SUFFIX) for part in path.parts)
            or path.with_name(path.name + SHARDS_SUFFIX).is_dir())  # a store's index file


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
                if dataset.is_virtual:
                    continue  # a shard over part files: its rows are checked in the parts
                checksummed &= bool(dataset.fletcher32)
                problem = _check_dataset(dataset)
                if problem:
                    return Verdict(path, DAMAGED, problem + fix, size)
            version = int(handle.attrs.get("format_version", 0))
            over_parts = handle.attrs.get("layout") == FILES_LAYOUT
    except OSError as err:
        if not _ours(path):
            return Verdict(path, FOREIGN, f"not a ptransfer store (not HDF5: {err}): skipped",
                           size)
        return Verdict(path, DAMAGED, f"cannot be read as HDF5 ({err})" + fix, size)
    problem, remark = _manifest_check(path, size)
    if problem:
        return Verdict(path, DAMAGED, problem + fix, size)
    if not checksummed:
        return Verdict(path, UNCHECKED, f"format {version} without checksums: read in full and "
                       "finite, but damage to its numbers cannot be detected; delete it and "
                       "re-run to rewrite it with checksums", size)
    what = ("shard over part files: its keys' checksums match" if over_parts
            else "every block's checksum matches")
    return Verdict(path, OK, what + remark, size)


def _manifest_check(path: Path, size: int) -> tuple[str | None, str]:
    """(a problem, a remark) of a shard file or part file against its shard's manifest.

    A shard file ``<folder>/S.h5`` is checked against the manifest's own size and SHA-256,
    a part file ``<folder>/S.files/<writer>/k.h5`` against its entry in ``files``. No
    manifest (a shard published just now, or a writer's parts): nothing to check.
    """
    folder, name = path.parent, path.stem
    if folder.parent.name.endswith(FILES_SUFFIX) and folder.parent.parent.name.endswith(
            SHARDS_SUFFIX):
        folder, name = folder.parent.parent, folder.parent.name[: -len(FILES_SUFFIX)]
    manifest_file = manifest_path(folder, name)
    if not folder.name.endswith(SHARDS_SUFFIX) or not manifest_file.exists():
        return None, ""
    try:
        manifest = read_manifest(manifest_file)
    except StoreError as err:
        return str(err), ""
    expected = (manifest.n_bytes, manifest.sha256)
    if folder != path.parent:  # a part file
        relative = str(path.relative_to(folder))
        records = {record.file: record for record in manifest.files}
        if relative not in records:
            return None, (f"; not a file of the published shard {name} (left by a writer "
                          "killed while publishing): unused, safe to delete")
        expected = (records[relative].n_bytes, records[relative].sha256)
    if expected[0] != size:
        return f"{size} bytes but its manifest {manifest_file.name} records {expected[0]}", ""
    if file_sha256(path) != expected[1]:
        return f"SHA-256 differs from the one its manifest {manifest_file.name} records", ""
    return None, ""


def _verify_index(path: Path, handle: h5py.File, size: int) -> Verdict:
    """An index file: readable, and every file it maps present with the size it lists."""
    try:
        listed = json.loads(handle.attrs.get("sources", "[]"))
        files = _index_files(handle)
        n_rows = len(handle["keys"])
    except (OSError, ValueError, KeyError) as err:
        return Verdict(path, DAMAGED, f"index unreadable ({err}); it is derived from the "
                       f"shards: delete {path}, or let the next run that opens the store "
                       "rewrite it by itself", size)
    folder = path.with_name(path.name + SHARDS_SUFFIX)
    changed = [name for name, n_bytes in files
               if not (folder / name).is_file() or (folder / name).stat().st_size != n_bytes]
    present = sorted(p.stem for p in folder.glob("*.h5")) if folder.is_dir() else []
    if changed or present != [name for name, _ in listed]:
        return Verdict(path, OK, f"index of {n_rows} rows is out of date (shards published or "
                       "removed since); the next reader rewrites it", size)
    return Verdict(path, OK, f"index of {n_rows} rows over {len(listed)} shard(s)", size)


def _index_files(handle: h5py.File) -> list[list]:
    """``[[path in the shard folder, bytes], ...]`` an index file maps (older index files
    list shards only: one file each)."""
    files = json.loads(handle.attrs.get("files", "null") or "null")
    if files is None:
        files = [[f"{name}.h5", n_bytes]
                 for name, n_bytes in json.loads(handle.attrs.get("sources", "[]"))]
    return files


def missing_files(folder: Path, only: str | None = None) -> list[Verdict]:
    """Files of a shard folder that a manifest, a shard file or the store's index file lists
    but that are gone (``only``: of that shard alone), as MISSING verdicts."""
    expected: dict[Path, str] = {}
    for manifest_file in sorted(folder.glob(f"*{MANIFEST_SUFFIX}")):
        name = manifest_file.name[: -len(MANIFEST_SUFFIX)]
        if manifest_file.name.endswith(TODO_SUFFIX) or (only and name != only):
            continue
        with contextlib.suppress(StoreError):  # unreadable: reported with its shard file
            manifest = read_manifest(manifest_file)
            for file in [f"{name}.h5", *(record.file for record in manifest.files)]:
                expected.setdefault(folder / file, manifest_file.name)
    listers = sorted(folder.glob("*.h5"))
    index = folder.with_name(folder.name[: -len(SHARDS_SUFFIX)])
    listers += [index] if index.is_file() and not only else []
    for lister in listers:
        with contextlib.suppress(OSError, ValueError, KeyError), h5py.File(lister, "r") as h:
            if h.attrs.get("layout") == FILES_LAYOUT and (not only or lister.stem == only):
                files = [f for f, _, _ in json.loads(h.attrs["files"])]
            elif h.attrs.get("layout") == "index":
                files = [f for f, _ in _index_files(h)]
            else:
                continue
            for file in files:
                expected.setdefault(folder / file, lister.name)
    return [Verdict(path, MISSING, f"missing (listed by {who}): {REDO}", 0)
            for path, who in sorted(expected.items()) if not path.exists()]


def verify_path(path: str | Path, out=print) -> tuple[list[Verdict], float]:
    """Verify a folder of stores, one store (its index file and shards), or one file."""
    path = Path(path)
    if path.is_dir():
        return verify_dir(path, out)
    if not path.is_file():
        raise FileNotFoundError(f"no embedding store folder or file {path} (store_dir=, "
                                "default results/embeddings)")
    files, scope = [path], []
    folder = path.with_name(path.name + SHARDS_SUFFIX)
    if folder.is_dir():  # the store's index file: its shards (and parts) too
        files += store_files(folder)
        scope = [(folder, None)]
    elif path.parent.name.endswith(SHARDS_SUFFIX):  # one shard: the files it lists
        scope = [(path.parent, path.stem)]
    return _verify_files(files, path, out, scope)


def verify_dir(root: str | Path, out=print) -> tuple[list[Verdict], float]:
    """Verify every store under ``root``, printing one line each; (verdicts, seconds)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no embedding store folder {root} (store_dir=, default "
                                "results/embeddings)")
    folders = sorted(p for p in root.rglob(f"*{SHARDS_SUFFIX}") if p.is_dir())
    return _verify_files(store_files(root), root, out, [(f, None) for f in folders])


def _verify_files(files: list[Path], where: Path, out, scope: list[tuple[Path, str | None]]
                  ) -> tuple[list[Verdict], float]:
    started = time.perf_counter()
    verdicts = []
    for path in files:
        verdict = verify_file(path)
        verdicts.append(verdict)
        out(f"{LABELS[verdict.state]:9s} {path}: {verdict.detail}")
    for folder, only in scope:
        for verdict in missing_files(folder, only):
            verdicts.append(verdict)
            out(f"{LABELS[verdict.state]:9s} {verdict.path}: {verdict.detail}")
    seconds = time.perf_counter() - started
    counts = {state: sum(v.state == state for v in verdicts) for state in LABELS}
    total = sum(v.n_bytes for v in verdicts if v.state != FOREIGN)
    out(f"{len(verdicts) - counts[FOREIGN]} store files ({size_text(total)}) under {where} in "
        f"{seconds:.1f} s: {counts[OK]} ok, {counts[DAMAGED]} damaged, {counts[MISSING]} "
        f"missing, {counts[UNCHECKED]} without checksums, {counts[FOREIGN]} not a ptransfer "
        "store")
    return verdicts, seconds


def exit_status(verdicts: list[Verdict]) -> int:
    """1 when a file is damaged or missing, else 0."""
    return 1 if any(v.state in FAILING for v in verdicts) else 0
