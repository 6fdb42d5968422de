"""Shards sized by estimated work: GPU time and bytes, balanced cuts, validated targets, and the
launcher time-limit check (``embed.shard_sizing``). Reference numbers are computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ptransfer.embed.batching import Batching
from ptransfer.embed.settings import ExtractSettings
from ptransfer.embed.shard_sizing import (
    ShardLimits,
    ShardSizing,
    StoreWork,
    balanced_cuts,
    over_time_limit,
)
from ptransfer.embed.shards import PlannedShard, canonical_order, plan_shards, slice_by_tokens

ESM2_650M = 651_043_254  # conf/model/esm2_t33_650M_UR50D.yaml n_params


def _tokens(piece: list[str]) -> int:
    return sum(len(s) + 2 for s in piece)


def test_equal_sequences_are_cut_evenly_not_greedily():
    # 21 sequences of 100 tokens, at most 1,000 a shard: greedy cuts 10 + 10 + 1; three
    # shards are needed, and balanced they hold 7 each.
    sequences = [f"M{i:03d}".ljust(98, "A") for i in range(21)]
    slices = slice_by_tokens(sequences, 1000)
    assert [len(piece) for piece in slices] == [7, 7, 7]
    assert [s for piece in slices for s in piece] == canonical_order(sequences)


def _greedy_count(tokens: list[int], cap: int) -> int:
    """Shards that filling in order makes (the 0.2 cut): the fewest within ``cap``."""
    count, used = 1, 0
    for value in tokens:
        if used and used + value > cap:
            count, used = count + 1, 0
        used += value
    return count


def test_cuts_are_balanced_by_tokens_within_one_unit():
    # Batches of varied size: as many shards as filling them in order makes, each within
    # one batch's tokens of an equal share (|shard - total / K| <= largest unit).
    tokens = [90, 10, 50, 70, 30, 60, 20, 80, 40, 100, 10, 30, 70, 90, 20] * 3
    ends = balanced_cuts(tokens, [1] * len(tokens), ShardLimits(max_tokens=500))
    total, count = sum(tokens), _greedy_count(tokens, 500)  # 2,310 tokens, 5 shards
    assert len(ends) == count == 5
    sizes = [sum(tokens[a:b]) for a, b in zip([0, *ends[:-1]], ends)]
    assert sum(sizes) == total and max(sizes) <= 500
    assert all(abs(size - total / count) <= max(tokens) for size in sizes)


def test_when_an_equal_share_breaks_a_limit_the_largest_shard_is_minimised():
    # Protein level, at most 6 rows a shard: filling makes [3, 3] | [3, 1] (two shards); the
    # equal share of tokens (33 / 2) would cut after the third unit (9 rows): refused, and
    # the cut whose largest shard is smallest is 3 + 3 | 3 + 1.
    assert balanced_cuts([1, 1, 1, 30], [3, 3, 3, 1], ShardLimits(max_rows=6)) == [2, 4]


def test_a_shard_count_grows_until_every_shard_fits():
    # Three units of 400 under a cap of 700: two shards by the total (1,200), but every
    # two-way cut leaves 800 on one side: three shards.
    assert balanced_cuts([400, 400, 400], [1, 1, 1], ShardLimits(max_tokens=700)) == [1, 2, 3]
    # The same by rows: 3 rows each, at most 4 rows a shard.
    assert balanced_cuts([1, 1, 1], [3, 3, 3], ShardLimits(max_rows=4)) == [1, 2, 3]
    # A unit over the cap on its own is a shard of its own (a batch is never split); the
    # rest are filled as usual: 5,000 | 10 + 10.
    assert balanced_cuts([5000, 10, 10], [1, 1, 1], ShardLimits(max_tokens=100)) == [1, 3]
    assert balanced_cuts([], [], ShardLimits(max_tokens=100)) == []


def test_gpu_minutes_and_gigabytes_become_tokens_and_rows_of_the_model():
    # ESM-2 650M: 2 x 651,043,254 FLOPs a token at 100 TFLOP/s = 1.302e-5 s; 30 minutes
    # = 1,800 s = 1.8e17 // 1,302,086,508 = 138,239,662 tokens. Per-residue rows: 34 layers
    # x 1,280 x 2 bytes = 87,040 bytes; 20 GB = 229,779 rows. Pooled float32 rows: 34 x
    # 1,280 x 4 = 174,080 bytes; 1 GB = 5,744 rows.
    residue = StoreWork(ESM2_650M, "residue", 34, 1280, "float16")
    limits = ShardSizing().limits(residue)
    assert limits.max_tokens == 180_000_000_000_000_000 // 1_302_086_508 == 138_239_662
    assert limits.max_rows == 20_000_000_000 // 87_040 == 229_779
    pooled = ShardSizing(max_gpu_minutes=None, max_gb=1.0, max_tokens=5000).limits(
        StoreWork(ESM2_650M, "protein", 34, 1280, "float32"))
    assert (pooled.max_tokens, pooled.max_rows) == (5000, 5744)
    # A model of no parameters (one-hot, a fake) has no GPU limit.
    assert ShardSizing().limits(StoreWork(0, "protein", 1, 4, "float32")).max_tokens is None


def test_a_per_residue_store_is_cut_into_shards_within_both_targets():
    # ss3-like, at 650M's size per residue: 44.1 GB of features for 2,000 sequences (506,900
    # residues x 87,040 bytes), so three shards by bytes (each <= 20 GB), evenly filled
    # (~14.7 GB each); time is far below 30 minutes.
    work = StoreWork(ESM2_650M, "residue", 34, 1280, "float16")
    sequences = [("MK" * 200)[: 100 + (i * 37) % 300] + f"{i:04d}" for i in range(2000)]
    total_bytes = work.n_bytes(sequences)
    shards = plan_shards(Path("s.h5"), sequences, frozenset(), ShardSizing().limits(work),
                         Batching(toks_per_batch=4096))
    assert total_bytes == sum(map(len, sequences)) * 34 * 1280 * 2
    assert len(shards) == math.ceil(total_bytes / 20e9) == 3
    sizes = [work.n_bytes(s.todo) for s in shards]
    assert max(sizes) <= 20e9 and min(sizes) > 0.32 * total_bytes
    assert all(work.gpu_seconds(s.todo) < 1800 for s in shards)


@pytest.mark.parametrize(("key", "kwargs", "value"), [
    ("extract.shard_max_gpu_minutes", {"max_gpu_minutes": 0}, "0"),
    ("extract.shard_max_gpu_minutes", {"max_gpu_minutes": "abc"}, "'abc'"),
    ("extract.shard_max_gb", {"max_gb": -1}, "-1"),
    ("extract.shard_max_gb", {"max_gb": True}, "True"),
    ("extract.shard_tokens", {"max_tokens": -5}, "-5"),
    ("extract.shard_tokens", {"max_tokens": 0}, "0"),
    ("extract.shard_tokens", {"max_tokens": 1.5}, "1.5"),
])
def test_a_zero_or_negative_target_is_refused_naming_its_key(key, kwargs, value):
    with pytest.raises(ValueError, match=rf"^{key} must be .* got {value}"):
        ShardSizing(**kwargs)


@pytest.mark.parametrize("tokens", [0, -5])
def test_a_bare_token_cap_is_checked_too(tokens):
    with pytest.raises(ValueError, match=rf"^extract.shard_tokens must be > 0 .* got {tokens}"):
        slice_by_tokens(["MKV"], tokens)


def test_targets_come_from_the_config_with_documented_defaults():
    extract = OmegaConf.load(Path(__file__).parents[1] / "conf" / "config.yaml").extract
    settings = ExtractSettings.from_mapping(OmegaConf.to_container(extract))
    assert settings.sizing() == ShardSizing(30.0, 20.0, None) == ExtractSettings().sizing()
    assert ExtractSettings(shard_tokens=4300).sizing().max_tokens == 4300
    assert ExtractSettings(shard_max_gb=None).sizing().max_gb is None
    with pytest.raises(ValueError, match="extract.shard_max_gb must be > 0"):
        ExtractSettings.from_mapping({"shard_max_gb": 0})  # refused when the cell is made


def test_shards_over_a_launcher_time_limit_are_reported_naming_the_keys():
    # ESM-2 15B (15,000,000,000 params): 3e-4 s a token; 1,000 sequences of 998 residues
    # = 1,000,000 tokens = 300 s = 5 GPU-minutes.
    work = StoreWork(15_000_000_000, "protein", 49, 5120, "float32")
    shard = PlannedShard("shard-0123", ["M" * 998] * 1000, 1000)
    small = PlannedShard("shard-4567", ["M" * 98] * 10, 10)
    lines = over_time_limit([shard, small], work, 4, "hydra.launcher.timeout_min", "s.h5")
    assert lines == ["shard shard-0123 of s.h5 is estimated at 5 GPU-minutes, over the "
                     "4-minute time limit of its launcher (hydra.launcher.timeout_min): lower "
                     "extract.shard_max_gpu_minutes below 4 or raise "
                     "hydra.launcher.timeout_min"]
    assert over_time_limit([shard, small], work, 6, "hydra.launcher.timeout_min") == []
    with pytest.raises(ValueError, match="hydra.launcher.timeout_min must be > 0"):
        over_time_limit([shard], work, 0, "hydra.launcher.timeout_min")
