"""Benchmark: the weights fingerprint of a large file, on first use and on re-use.

A cell's key holds the SHA-256 of the weights file it reads (encoders/weights_fingerprint.py).
This writes a temporary file of ``--gb`` GB (default 2.5, the size of ESM-2 650M's ``.pt``)
outside the repository, then times:

  (a) first use: the file is read and hashed (cold memo; the file was just written, so it
      is likely in the page cache: a cold disk reads at its own speed);
  (b) re-use in the same process (the in-process memo: one ``stat``);
  (c) re-use in a new process (the memo file ``weights_fingerprints.json``: ``stat`` + JSON);
  (d) the cell key of a pretrained cell reading it (``cell.key.cell_key``), memoised.

The file is deleted at the end, also after an error.

    python scripts/bench_fingerprint.py            # 2.5 GB
    python scripts/bench_fingerprint.py --gb 0.5   # quick run
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ptransfer.encoders import weights_fingerprint as wf

CHUNK = 64 << 20


def write_file(path: Path, n_bytes: int) -> None:
    """``n_bytes`` of pseudo-random data (not zeros: a sparse file would read faster)."""
    block = os.urandom(CHUNK)
    with open(path, "wb") as handle:
        written = 0
        while written < n_bytes:
            part = block[: min(CHUNK, n_bytes - written)]
            handle.write(part)
            written += len(part)


def timed(call, repeats: int = 1) -> tuple[float, object]:
    start = time.perf_counter()
    for _ in range(repeats):
        value = call()
    return (time.perf_counter() - start) / repeats, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.5, help="file size in GB (default 2.5)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to write it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ptransfer_bench_fp_", dir=args.dir))
    try:
        weights = work / "esm2_bench.pt"
        n_bytes = int(args.gb * 1e9)
        seconds, _ = timed(lambda: write_file(weights, n_bytes))
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
              f"python {platform.python_version()}")
        print(f"wrote {n_bytes / 1e9:.2f} GB in {seconds:.1f} s to {weights}")
        model = {"name": "esm2_bench", "family": "esm2", "weights": str(weights)}
        fingerprint = lambda: wf.weights_fingerprint(model, "final", "pretrained", "full", work)  # noqa: E731
        first, value = timed(fingerprint)
        print(f"(a) first use (read + SHA-256):  {first:8.2f} s  "
              f"({n_bytes / 1e9 / first:.2f} GB/s)  {value[:23]}...")
        again, _ = timed(fingerprint, repeats=1000)
        print(f"(b) re-use, same process:        {again * 1e6:8.1f} us")
        code = ("import time; from ptransfer.encoders import weights_fingerprint as wf; "
                f"m = {model!r}; t = time.perf_counter(); "
                f"wf.weights_fingerprint(m, 'final', 'pretrained', 'full', {str(work)!r}); "
                "print(time.perf_counter() - t)")
        fresh = float(subprocess.run([sys.executable, "-c", code], check=True,
                                     capture_output=True, text=True).stdout)
        print(f"(c) re-use, new process (memo file): {fresh * 1e3:6.2f} ms")
        print(cell_key_line(weights, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cell_key_line(weights: Path, work: Path) -> str:
    from hydra import compose, initialize_config_dir

    from ptransfer.cell.key import cell_key
    from ptransfer.cell.spec import cell_spec

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["task=synthetic", "model=esm2_t6_8M_UR50D",
                                           f"model.weights={weights}", f"results_dir={work}"])
    cell_spec(cfg)  # fingerprints the weights once (memoised on disk)
    seconds, _ = timed(lambda: cell_key(cell_spec(cfg)), repeats=20)
    return f"(d) cell_key of a pretrained cell reading it (memoised): {seconds * 1e3:.1f} ms"


if __name__ == "__main__":
    main()
