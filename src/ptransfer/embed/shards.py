"""Shards of an embedding store: how sequences are cut into shards, and the atomic publish.

A store ``<name>.h5`` keeps its rows in immutable shards ``<name>.h5.shards/<shard>.h5``.
Each shard has exactly one writer at a time that matters: it writes its rows under temporary
names, then **publishes** the shard by ``os.link`` to its final name (``publish``: atomic,
and it fails when the name exists, so the first publication wins and a published shard is
never rewritten), then its **manifest** ``<shard>.json`` the same way (``embed.manifests``;
what a published shard is made of: ``embed.publication``). No lock is involved: a second
writer of the same shard (a broken claim, a second sweep) finds the name taken and discards
its own copy. Readers see a shard once its ``.h5`` exists under its final name; a shard
published without its manifest (a writer killed between the two) is complete and gets its
manifest from the next reader.

Shards are planned by work (``plan_shards``; sizes in ``embed.shard_sizing``): the unique
sequences a store is asked for, longest first (so a batch's padding stays low), cut into the
fewest consecutive slices whose estimated GPU time and bytes stay within the shard targets
(``extract.shard_max_gpu_minutes``, ``extract.shard_max_gb``, optionally
``extract.shard_tokens``), balanced by tokens, only where a batch of the whole extraction ends
(so each shard runs exactly the batches one writer would). The cut depends only on the
sequences asked for and the limits, and a shard's name on the keys of its slice, so a re-run,
or a second sweep started at once, plans the same shards under the same names: finished
shards are skipped and only unpublished ones are redone. A shard's *todo* is its slice minus
the rows already published (by any shard of the store).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ptransfer.embed.batching import Batching, batch_units
from ptransfer.embed.settings import DEFAULT_SHARD_TOKENS  # noqa: F401 - shards' API too
from ptransfer.embed.shard_sizing import EXTRA_TOKENS, ShardLimits, balanced_cuts
from ptransfer.embed.store_files import StoreError, sequence_key

log = logging.getLogger(__name__)

SHARDS_SUFFIX = ".shards"
MANIFEST_SUFFIX = ".json"
TODO_SUFFIX = ".todo.json"
CLAIM_SUFFIX = ".claim"
PARTS_SUFFIX = ".parts"


def shard_folder(store_path: Path) -> Path:
    """``<store>.h5.shards``: where a store's shards, manifests and claims live."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + SHARDS_SUFFIX)


def sequence_tokens(sequence: str) -> int:
    return len(sequence) + EXTRA_TOKENS


@dataclass(frozen=True)
class PlannedShard:
    """One slice of a store's sequences: its name, and the sequences still to embed."""

    name: str
    todo: list[str]  # the slice minus rows already published, longest first
    n_slice: int  # sequences in the whole slice

    @property
    def tokens(self) -> int:
        return sum(sequence_tokens(s) for s in self.todo)


def keyed(sequences: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """``{key: sequence}`` of unique sequences (a mapping of that form is taken as it is)."""
    if isinstance(sequences, Mapping):
        return dict(sequences)
    return {sequence_key(s): s for s in sequences}


def canonical_order(sequences: Iterable[str] | Mapping[str, str]) -> list[str]:
    """Unique sequences, longest first, ties by key: the order a store's shards are cut in."""
    unique = keyed(sequences)
    return [unique[k] for k in _canonical_keys(unique)]


def _canonical_keys(unique: dict[str, str]) -> list[str]:
    return sorted(unique, key=lambda k: (-len(unique[k]), k))


_SLICES: dict[tuple, list[list[str]]] = {}  # stores asked for the same sequences: cut once


def as_limits(limits: ShardLimits | int) -> ShardLimits:
    """``ShardLimits`` as given; a number is a token cap alone (``extract.shard_tokens``)."""
    if isinstance(limits, ShardLimits):
        return limits
    return ShardLimits(max_tokens=limits)


def slice_keys(unique: dict[str, str], limits: ShardLimits | int,
               batching: Batching | None = None) -> list[list[str]]:
    """The keys of each slice (see ``slice_by_tokens``), memoised per set of sequences."""
    limits = as_limits(limits)
    memo = (frozenset(unique), limits, batching)
    if memo not in _SLICES:
        if len(_SLICES) > 64:
            _SLICES.clear()
        order = _canonical_keys(unique)
        units = (batch_units([unique[k] for k in order], batching) if batching is not None
                 else [[i] for i in range(len(order))])
        lengths = [[len(unique[order[i]]) for i in unit] for unit in units]
        rows = [sum(unit) if limits.level == "residue" else len(unit) for unit in lengths]
        tokens = [sum(unit) + EXTRA_TOKENS * len(unit) for unit in lengths]
        start, slices = 0, []
        for end in balanced_cuts(tokens, rows, limits):
            slices.append([order[i] for unit in units[start:end] for i in unit])
            start = end
        _SLICES[memo] = slices
    return _SLICES[memo]


def slice_by_tokens(sequences: Iterable[str] | Mapping[str, str],
                    limits: ShardLimits | int, batching: Batching | None = None
                    ) -> list[list[str]]:
    """Unique ``sequences`` in canonical order, cut into the fewest consecutive slices within
    ``limits`` (a number: tokens per slice), balanced by tokens (``embed.shard_sizing``); a
    sequence (or a batch) over the limits gets a slice of its own.

    With ``batching`` (the extraction's), cuts fall only where a batch of the whole
    extraction ends (``embed.batching.batch_units``), so the batches of each shard are the
    batches a single writer runs: the features do not depend on the number of shards.
    """
    unique = keyed(sequences)
    return [[unique[k] for k in piece] for piece in slice_keys(unique, limits, batching)]


def shard_name(store_path: Path, sequences: Sequence[str] = (),
               keys: Sequence[str] | None = None) -> str:
    """``shard-<16 hex>``: a digest of the store file name and the slice's sorted keys."""
    digest = hashlib.sha256(Path(store_path).name.encode())
    for key in sorted(keys if keys is not None else (sequence_key(s) for s in sequences)):
        digest.update(key.encode("ascii"))
    return f"shard-{digest.hexdigest()[:16]}"


def plan_shards(store_path: Path, sequences: Iterable[str] | Mapping[str, str],
                published: set[str] | frozenset, limits: ShardLimits | int,
                batching: Batching | None = None) -> list[PlannedShard]:
    """The shards with work left for ``sequences`` (``published``: keys the store has);
    ``limits``: ``ShardSizing.limits`` of the store, or a number of tokens per shard."""
    unique = keyed(sequences)
    planned = []
    for piece in slice_keys(unique, limits, batching):
        todo = [unique[k] for k in piece if k not in published]
        if todo:
            planned.append(PlannedShard(shard_name(store_path, keys=piece), todo, len(piece)))
    return planned


# ---------------------------------------------------------------- publication
def publish(tmp: Path, final: Path) -> bool:
    """Give the complete file ``tmp`` the name ``final`` unless that name exists.

    ``os.link`` is atomic and refuses an existing name (also over NFS); where hard links are
    not supported, ``os.rename`` after an existence check (a rename over a just-published
    twin replaces it with an equal file). Returns True when ``tmp`` became ``final``; the
    temporary name is gone either way.
    """
    try:
        os.link(tmp, final)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        return False
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                             errno.EMLINK):
            raise
        if final.exists():
            tmp.unlink(missing_ok=True)
            return False
        os.rename(tmp, final)
        return True
    tmp.unlink(missing_ok=True)
    return True


# ---------------------------------------------------------------- phase-1 inputs
def write_todo(store_path: Path, shard: PlannedShard, store_spec: dict) -> Path:
    """``<shard>.todo.json``: the sequences a phase-1 job embeds and the store it writes."""
    folder = shard_folder(store_path)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{shard.name}{TODO_SUFFIX}"
    tmp = folder / f"{shard.name}.{uuid.uuid4().hex}.todo.tmp"
    tmp.write_text(json.dumps({"store": str(Path(store_path).absolute()), "shard": shard.name,
                               **store_spec, "sequences": shard.todo}))
    os.replace(tmp, final)  # two sweeps planning at once write equivalent files
    return final


def read_todo(path: str | Path) -> dict:
    """A phase-1 job's input; a clear error names the file when it is gone or torn."""
    try:
        data = json.loads(Path(path).read_text())
        data["store"], data["shard"], data["sequences"]  # noqa: B018 - required fields
    except (OSError, ValueError, KeyError) as err:
        raise StoreError(f"{path}: shard job input missing or unreadable ({err}); re-run the "
                         "sweep to plan its shards again") from err
    return data


def remove_quietly(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()
