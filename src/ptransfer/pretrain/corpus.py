"""The pretraining corpus: FASTA files and/or tasks' training splits, minus every test sequence.

Every candidate that equals, lies inside or contains a sequence of any configured test set is
removed (case-insensitive; ``tasks.overlap``, the check ``task.overlap`` uses), and a seeded
5 % is held out for the validation loss (cropped once to ``data.max_len``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ptransfer.pretrain.mlm import CANONICAL, RESIDUES, crop
from ptransfer.tasks.overlap import overlap_mask

log = logging.getLogger(__name__)

TASK_CONF_DIR = Path(__file__).resolve().parents[3] / "conf" / "task"

@dataclass
class PretrainData:
    """Pretraining sequences: ``train`` (whole; cropped anew each epoch), ``val`` (cropped once)."""

    train: list[str]
    val: list[str]
    n_removed: int  # unique candidates dropped: equal to, inside or containing a test sequence
    digest: str  # SHA-256 of train and val: a resumed run must see the same data


def read_fasta(path: str | Path) -> list[tuple[str, str]]:
    """(header, sequence) records of a FASTA file; sequences upper-cased and checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FASTA file {path} not found")
    records: list[tuple[str, list[str]]] = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if line.startswith(">"):
            records.append((line[1:].strip() or f"(line {line_no})", []))
        elif line and not records:
            raise ValueError(f"{path}:{line_no}: sequence line before the first '>' header")
        elif line:
            records[-1][1].append(line)
    if not records:
        raise ValueError(f"{path}: no FASTA records")
    return [(name, checked(''.join(chunks), f"{path} record {name!r}")) for name, chunks in records]


def checked(sequence: str, where: str) -> str:
    """The upper-cased sequence; an error naming ``where`` if it is empty or not protein."""
    sequence = sequence.strip().upper()
    if not sequence:
        raise ValueError(f"{where}: empty sequence")
    bad = sorted(set(sequence) - RESIDUES)
    if bad:
        raise ValueError(f"{where}: characters {bad} are not residues "
                         f"(allowed: {CANONICAL} and X, B, Z, U, O)")
    return sequence


def load_task(name: str, data_cfg: dict):
    """Instantiate ``conf/task/<name>.yaml`` (its ``root`` set to ``data.root``)."""
    import hydra
    from hydra.errors import InstantiationException

    conf_dir = Path(data_cfg.get("task_conf_dir") or TASK_CONF_DIR)
    path = conf_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in conf_dir.glob("*.yaml"))
        raise FileNotFoundError(f"data.tasks: no task config {path} (known: {known})")
    node = OmegaConf.load(path)
    if "root" in node:
        node.root = str(data_cfg["root"])
    try:
        return hydra.utils.instantiate(node, _convert_="all")
    except Exception as err:  # instantiate wraps loader errors; name the config at fault
        cause = err
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__  # the loader's own words (DataUnavailable: which file)
        raise ValueError(f"data.tasks: task {name!r} ({path}) failed to load: {cause}") from err


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str | Path) else list(value)


def gather_sequences(data_cfg: dict) -> tuple[list[str], dict[str, set[str]]]:
    """(candidate pretraining sequences, test-set name -> its sequences to exclude)."""
    candidates: list[str] = []
    test_sets: dict[str, set[str]] = {}
    for name in _as_list(data_cfg.get("tasks")) + _as_list(data_cfg.get("exclude_tasks")):
        task = load_task(name, data_cfg)
        for test in task.test_sets:
            test_sets[f"{name}/{test}"] = {s.upper() for s in task.splits[test].sequences}
        if name not in _as_list(data_cfg.get("tasks")):
            continue  # exclude_tasks: only their test sets matter
        for split in _as_list(data_cfg.get("splits")):
            if split not in task.splits:
                raise ValueError(f"data.splits: task {name!r} has no split {split!r} "
                                 f"(it has {sorted(task.splits)})")
            candidates += [checked(s, f"task {name} split {split} sequence {i}")
                           for i, s in enumerate(task.splits[split].sequences)]
    for path in _as_list(data_cfg.get("fasta")):
        candidates += [seq for _, seq in read_fasta(path)]
    for path in _as_list(data_cfg.get("exclude_fasta")):
        test_sets[str(path)] = {seq for _, seq in read_fasta(path)}
    if not candidates:
        raise ValueError("no pretraining sequences: set data.fasta and/or data.tasks")
    return candidates, test_sets


def load_pretrain_data(data_cfg: dict) -> PretrainData:
    """Unique candidates minus test-set overlaps, split into train and a seeded val.

    A candidate is removed when it equals, lies inside or contains a sequence of any test set
    (a fragment of a test protein, or a construct holding one, leaks as much as a copy).
    """
    candidates, test_sets = gather_sequences(data_cfg)
    unique = list(dict.fromkeys(candidates))
    leaks = {k: overlap_mask(unique, sorted(v)) for k, v in test_sets.items()}
    removed = np.logical_or.reduce([*leaks.values(), np.zeros(len(unique), dtype=bool)])
    kept = [s for s, leak in zip(unique, removed, strict=True) if not leak]
    per_set = ", ".join(f"{k}: {int(m.sum())}" for k, m in leaks.items())
    log.info("pretraining data: %d sequences, %d duplicates dropped, %d removed as test-set "
             "sequences (%s; equal to, inside or containing one)", len(candidates),
             len(candidates) - len(unique), len(unique) - len(kept),
             per_set or "no test sets configured")
    fraction = float(data_cfg["val_fraction"])
    if not 0.0 < fraction < 1.0 or len(kept) < 2:
        raise ValueError(f"data.val_fraction={fraction} must be in (0, 1) and at least 2 "
                         f"sequences are needed ({len(kept)} left after exclusion)")
    rng = np.random.default_rng(int(data_cfg["split_seed"]))
    order = rng.permutation(len(kept))
    n_val = min(max(1, round(fraction * len(kept))), int(data_cfg["max_val_sequences"]),
                len(kept) - 1)
    val = [crop(kept[i], int(data_cfg["max_len"]), rng) for i in sorted(order[:n_val])]
    train = [kept[i] for i in sorted(order[n_val:])]
    digest = hashlib.sha256("\n".join(train + ["|"] + val).encode()).hexdigest()
    return PretrainData(train, val, len(unique) - len(kept), digest)


