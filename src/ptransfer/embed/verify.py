"""``ptransfer store verify``: read every block of every embedding store, report the damaged.

Each dataset of a format-2 store carries HDF5 Fletcher-32 checksums per chunk, so reading
every chunk checks every byte of data; layer values are also checked finite (rows are
refused at write time unless finite, so NaN/inf means damage, and it is the only evidence
in a format-1 store, which has no checksums). Shards of an interrupted writer are checked
as well. A damaged store is rebuilt by deleting it: the next run re-extracts it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ptransfer.embed.diskspace import size_text

OK, DAMAGED, UNCHECKED = "ok", "damaged", "unchecked"


@dataclass
class Verdict:
    path: Path
    state: str  # ok | damaged | unchecked (readable, but without checksums: format 1)
    detail: str
    n_bytes: int


def store_files(root: Path) -> list[Path]:
    """Every store file (main files and committed shards) under ``root``, sorted."""
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
        if layer and not np.isfinite(block).all():
            row = int(np.flatnonzero(~np.isfinite(block).all(axis=-1))[0])
            first = where[0].start if where else 0
            return f"dataset {dataset.name}: NaN/inf at row {first + row}"
    return None


def verify_file(path: Path) -> Verdict:
    """Open ``path`` and read all of it; the verdict says what, if anything, is wrong."""
    size = path.stat().st_size
    fix = f"; delete {path} and re-run to rebuild it"
    try:
        with h5py.File(path, "r") as handle:
            if not bool(handle.attrs.get("complete", False)):
                return Verdict(path, DAMAGED, "not marked complete" + fix, size)
            checksummed = True
            for name in sorted(handle):
                dataset = handle[name]
                checksummed &= bool(dataset.fletcher32)
                problem = _check_dataset(dataset)
                if problem:
                    return Verdict(path, DAMAGED, problem + fix, size)
            version = int(handle.attrs.get("format_version", 0))
    except OSError as err:
        return Verdict(path, DAMAGED, f"cannot be read as HDF5 ({err})" + fix, size)
    if not checksummed:
        return Verdict(path, UNCHECKED, f"format {version} without checksums: read in full and "
                       "finite, but damage to its numbers cannot be detected; delete it and "
                       "re-run to rewrite it with checksums", size)
    return Verdict(path, OK, "every block's checksum matches", size)


def verify_dir(root: str | Path, out=print) -> tuple[list[Verdict], float]:
    """Verify every store under ``root``, printing one line each; (verdicts, seconds)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no embedding store folder {root} (store_dir=, default "
                                "results/embeddings)")
    started = time.perf_counter()
    verdicts = []
    for path in store_files(root):
        verdict = verify_file(path)
        verdicts.append(verdict)
        out(f"{verdict.state.upper():9s} {path}: {verdict.detail}")
    seconds = time.perf_counter() - started
    counts = {state: sum(v.state == state for v in verdicts) for state in (OK, DAMAGED, UNCHECKED)}
    total = sum(v.n_bytes for v in verdicts)
    out(f"{len(verdicts)} store files ({size_text(total)}) under {root} in {seconds:.1f} s: "
        f"{counts[OK]} ok, {counts[DAMAGED]} damaged, {counts[UNCHECKED]} without checksums")
    return verdicts, seconds
