"""Reference cells keep their ids and their bytes across refactors.

The ids and SHA-256 prefixes below were recorded on the code before the ``grid/`` package was
split into ``cell/`` and ``sweep/`` (commit eb39b82), by running these cells there. A change
of a cell's key (its effective config, the task or weights fingerprint, the spec built at the
door) or of its rows or predictions makes them differ: finished cells of users' sweeps would
then be redone, or, worse, silently compared with cells computed differently.
"""

from __future__ import annotations

import hashlib

from cell_helpers import cell_config
from cli_helpers import SHARED_DATA, needs_data

from ptransfer.cell.key import cell_key
from ptransfer.cell.run import run_cell
from ptransfer.cell.spec import cell_spec


def _digests(cell_dir) -> tuple[str, str]:
    return tuple(hashlib.sha256((cell_dir / name).read_bytes()).hexdigest()[:16]
                 for name in ("rows.csv", "predictions.parquet"))


def _run(results, *overrides, tiny=None):
    cfg = cell_config(results, *overrides, tiny=tiny)
    frame = run_cell(cfg)
    key = cell_key(cell_spec(cfg))
    assert frame.cell_id.iloc[0] == key.cell_id
    return key.cell_id, _digests(key.dir)


@needs_data("flip_gb1/splits.zip")
def test_reference_gb1_onehot_cell_keeps_its_id_and_bytes(tmp_path):
    cell_id, digests = _run(tmp_path, "task=gb1_two_vs_rest", "model=onehot",
                            f"data.root={SHARED_DATA}")
    assert cell_id == "gb1_two_vs_rest__onehot__final__pretrained__s42__b20a13bc41"
    assert digests == ("f0cd4ac992efecbc", "b8a06dfd62c8493e")


def test_reference_random_init_plm_cell_keeps_its_id_and_bytes(tmp_path):
    # A seeded ablation, a non-default seed and the float16 pooled store: every part of the
    # key that a PLM cell adds to a one-hot one (no weights are read: random init).
    cell_id, digests = _run(tmp_path, "task=synthetic", "ablation=random_init", "seed=3",
                            "extract.pooled_dtype=float16", tiny="esm2")
    assert cell_id == "synthetic__esm2_t2_tiny_UR50D__final__random_init__s3__a818e5fd6c"
    assert digests == ("486478f9e33c136e", "c71ae571b4cdef8d")
