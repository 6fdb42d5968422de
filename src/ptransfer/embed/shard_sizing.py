"""How large a shard is: sized by its estimated work (GPU time and bytes written), cut evenly.

A shard is one phase-1 job (``embed.shards``). Two things bound what one job should do:

- **GPU time**, estimated as tokens x the model's per-token cost: ``2 x n_params`` FLOPs per
  token (a forward pass) at :data:`EFFECTIVE_TFLOPS`, the planning rate ``ptransfer plan``
  states. At most ``extract.shard_max_gpu_minutes`` (default 30) per shard, so a job fits a
  launcher's time limit and a kill loses little;
- **bytes written**: rows x layers x dim x dtype (``embed.diskspace``), at most
  ``extract.shard_max_gb`` (default 20, in 1e9 bytes) per shard, so one job never needs a
  whole disk's worth of free space.

``extract.shard_tokens`` (default null) stays as an extra cap on tokens per shard (residues +
BOS/EOS): the way to force many small shards on a small store. Each limit may be null (no
limit); zero or negative is refused, naming the key.

The number of shards is the fewest that keep every shard within every limit; the cut then
balances GPU time (tokens: one store, one model, so time is proportional to tokens) across
them, instead of filling shards greedily and leaving a small remainder. Cuts fall only where
a batch of the whole extraction ends (``embed.batching.batch_units``), so each shard runs the
batches one writer would run and rows are bit-identical for any number of shards.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ptransfer.embed.diskspace import expected_store_bytes

EFFECTIVE_TFLOPS = 100.0  # bf16 on one A100/H100 at ~30-40 % utilisation: a rough planning rate
GPU_MINUTES_KEY = "extract.shard_max_gpu_minutes"
GB_KEY = "extract.shard_max_gb"
TOKENS_KEY = "extract.shard_tokens"
DEFAULT_GPU_MINUTES = 30.0
DEFAULT_GB = 20.0
EXTRA_TOKENS = 2  # BOS/EOS per sequence, as the extractor's token budget counts them


def gpu_seconds(n_params: float, tokens: float) -> float:
    """Forward-pass time of ``tokens`` through a model of ``n_params`` at the planning rate."""
    return 2.0 * float(n_params) * float(tokens) / (EFFECTIVE_TFLOPS * 1e12)


def _limit(value, key: str, integer: bool = False) -> float | int | None:
    """A positive limit, or None (null: no limit); anything else is refused naming ``key``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a positive number or null, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key} must be a positive number or null, got {value!r}") from err
    if not number > 0 or math.isinf(number):
        raise ValueError(f"{key} must be > 0 (or null: no limit), got {value!r}")
    if integer:
        if number != int(number):
            raise ValueError(f"{key} must be a whole number of tokens, got {value!r}")
        return int(number)
    return number


@dataclass(frozen=True)
class ShardSizing:
    """The documented targets of one shard (``extract.shard_*``); checked when made.

    Args:
        max_gpu_minutes: estimated GPU minutes per shard at most (None: no limit).
        max_gb: gigabytes (1e9 bytes) of features per shard at most (None: no limit).
        max_tokens: tokens per shard at most (``extract.shard_tokens``; None: no limit).
    """

    max_gpu_minutes: float | None = DEFAULT_GPU_MINUTES
    max_gb: float | None = DEFAULT_GB
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_gpu_minutes", _limit(self.max_gpu_minutes,
                                                           GPU_MINUTES_KEY))
        object.__setattr__(self, "max_gb", _limit(self.max_gb, GB_KEY))
        object.__setattr__(self, "max_tokens", _limit(self.max_tokens, TOKENS_KEY, True))

    def limits(self, work: StoreWork) -> ShardLimits:
        """These targets in the units a cut counts: tokens and feature rows of ``work``."""
        caps = [self.max_tokens] if self.max_tokens else []
        per_token = work.seconds_per_token()
        if self.max_gpu_minutes is not None and per_token > 0:
            caps.append(max(1, int(self.max_gpu_minutes * 60.0 / per_token)))
        rows = None
        if self.max_gb is not None:
            rows = max(1, int(self.max_gb * 1e9 / work.bytes_per_row()))
        return ShardLimits(min(caps) if caps else None, rows, work.level)


@dataclass(frozen=True)
class StoreWork:
    """What one store's extraction costs: its model's size and its rows' shape."""

    n_params: int
    level: str  # protein: a row per sequence; residue: a row per residue
    n_layers: int
    dim: int
    dtype: str

    def seconds_per_token(self) -> float:
        return gpu_seconds(self.n_params, 1)

    def bytes_per_row(self) -> float:
        return expected_store_bytes(1, self.n_layers, self.dim, self.dtype)

    def rows(self, sequences: Sequence[str]) -> int:
        return sum(map(len, sequences)) if self.level == "residue" else len(sequences)

    def gpu_seconds(self, sequences: Sequence[str]) -> float:
        return gpu_seconds(self.n_params, sum(len(s) + EXTRA_TOKENS for s in sequences))

    def n_bytes(self, sequences: Sequence[str]) -> float:
        return self.rows(sequences) * self.bytes_per_row()


@dataclass(frozen=True)
class ShardLimits:
    """A shard's limits in tokens and rows (None: no limit); ``level`` says what a row is."""

    max_tokens: int | None = None
    max_rows: int | None = None
    level: str = "protein"

    def __post_init__(self) -> None:
        _limit(self.max_tokens, TOKENS_KEY, True)
        _limit(self.max_rows, "shard rows", True)


def balanced_cuts(tokens: Sequence[int], rows: Sequence[int], limits: ShardLimits
                  ) -> list[int]:
    """Where to cut consecutive units (batches) into shards: the end index of each shard.

    ``tokens[i]``, ``rows[i]``: unit i's tokens and feature rows. As many shards as filling
    them in order would make (the fewest that keep every shard within the limits; a unit
    over them is a shard of its own), but each cut is the unit boundary nearest to an equal
    share of the tokens; when such a cut would break a limit, the cut whose largest shard is
    smallest (the classic linear partition) is used instead.
    """
    if not tokens:
        return []
    token_sums, row_sums = [0, *_cumsum(tokens)], [0, *_cumsum(rows)]
    count = len(_filled_ends(token_sums, row_sums, limits, 1.0))
    ends = _even_ends(token_sums, count)
    starts = [0, *ends[:-1]]
    if all(end - start == 1 or _load(token_sums, row_sums, limits, start, end) <= 1.0
           for start, end in zip(starts, ends)):
        return ends
    low, high = 0.0, 1.0  # the smallest scale of the limits that still needs `count` shards
    for _ in range(40):
        middle = (low + high) / 2
        if len(_filled_ends(token_sums, row_sums, limits, middle)) <= count:
            high = middle
        else:
            low = middle
    return _filled_ends(token_sums, row_sums, limits, high)


def _cumsum(values: Sequence[int]) -> list[int]:
    out, total = [], 0
    for value in values:
        total += int(value)
        out.append(total)
    return out


def _load(token_sums: list[int], row_sums: list[int], limits: ShardLimits, start: int,
          end: int) -> float:
    """Units ``start:end`` as a fraction of the limits (the larger of tokens and rows)."""
    load = 0.0
    if limits.max_tokens:
        load = (token_sums[end] - token_sums[start]) / limits.max_tokens
    if limits.max_rows:
        load = max(load, (row_sums[end] - row_sums[start]) / limits.max_rows)
    return load


def _filled_ends(token_sums: list[int], row_sums: list[int], limits: ShardLimits,
                 scale: float) -> list[int]:
    """Shards filled in order up to ``scale`` x the limits (a unit over them: alone)."""
    n = len(token_sums) - 1
    ends, start = [], 0
    for end in range(1, n + 1):
        if end - start > 1 and _load(token_sums, row_sums, limits, start, end) > scale:
            ends.append(end - 1)
            start = end - 1
    return [*ends, n]


def _even_ends(sums: list[int], count: int) -> list[int]:
    """``count`` non-empty runs of the units whose prefix sums are ``sums``: each cut at the
    boundary nearest to ``j / count`` of the total (ties: the earlier boundary)."""
    n = len(sums) - 1
    ends, previous = [], 0
    for j in range(1, count):
        target = sums[-1] * j / count
        low, high = previous + 1, n - (count - j)  # leave a unit for every later shard
        at = min(max(bisect.bisect_left(sums, target, low, high + 1), low), high)
        if at > low and target - sums[at - 1] <= sums[at] - target:
            at -= 1
        ends.append(at)
        previous = at
    return [*ends, n]


def over_time_limit(shards: Sequence, work: StoreWork, limit_minutes: float,
                    limit_key: str, store: str = "") -> list[str]:
    """One line per shard whose estimated GPU time exceeds a launcher's time limit.

    ``shards``: planned shards (``embed.shards.PlannedShard``, their sequences still to
    embed); ``limit_minutes``: the limit of the launcher that runs them, set by
    ``limit_key`` (named in the line, with the key that sizes shards). Empty when all fit.
    """
    limit = _limit(limit_minutes, limit_key)
    lines = []
    for shard in shards:
        minutes = work.gpu_seconds(shard.todo) / 60.0
        if minutes > limit:
            lines.append(
                f"shard {shard.name}{' of ' + store if store else ''} is estimated at "
                f"{minutes:.0f} GPU-minutes, over the {limit:g}-minute time limit of its "
                f"launcher ({limit_key}): lower {GPU_MINUTES_KEY} below {limit:g} or raise "
                f"{limit_key}")
    return lines


__all__ = ["DEFAULT_GB", "DEFAULT_GPU_MINUTES", "EFFECTIVE_TFLOPS", "GB_KEY", "GPU_MINUTES_KEY",
           "ShardLimits", "ShardSizing", "StoreWork", "TOKENS_KEY", "balanced_cuts",
           "gpu_seconds", "over_time_limit"]
