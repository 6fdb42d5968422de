"""The extraction settings a cell hands down: the ``extract`` config node as plain values.

Everything below the cell (extraction, the store, streaming probes) reads these fields, never
the Hydra config: the cell builds one :class:`ExtractSettings` at its door
(``cell.spec.cell_spec``). Defaults are ``conf/config.yaml``'s, so tests and scripts can build
one with only the fields they change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from ptransfer.embed.shard_sizing import DEFAULT_GB, DEFAULT_GPU_MINUTES, ShardSizing

# The token cap of a multirun's shard before shards were sized by work (ptransfer 0.2).
DEFAULT_SHARD_TOKENS = 60_000_000


@dataclass(frozen=True)
class ExtractSettings:
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    precision: str = "fp32"         # fp32 | bf16 | fp16 (autocast)
    toks_per_batch: int = 4096      # padded tokens per forward pass
    length_policy: str = "window"   # window | truncate
    residue_dtype: str = "float16"  # per-residue store dtype
    pooled_dtype: str = "float32"   # per-protein store dtype
    compression: str | None = None  # None | gzip | lzf
    progress: bool = True
    shard_max_gpu_minutes: float | None = DEFAULT_GPU_MINUTES  # a shard's estimated GPU time
    shard_max_gb: float | None = DEFAULT_GB  # ... and features written (1e9 bytes), at most
    shard_tokens: int | None = None  # optional extra cap on a shard's tokens
    jobs_per_gpu: int = 1
    shard: str | None = None        # the shard a phase-1 job writes (set by the sweeper)

    def __post_init__(self) -> None:
        self.sizing()  # a shard target of zero or below is refused here, naming its key

    def sizing(self) -> ShardSizing:
        """The shard targets (``embed.shard_sizing``), checked."""
        return ShardSizing(self.shard_max_gpu_minutes, self.shard_max_gb, self.shard_tokens)

    @classmethod
    def from_mapping(cls, values: Mapping) -> ExtractSettings:
        """From the ``extract`` node (or any mapping of its keys); an unknown key is an error
        naming it (the config checks refuse it earlier with the list of known keys)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"config key 'extract.{unknown[0]}' is not an extraction setting "
                             f"(known: {sorted(known)})")
        given = dict(values)
        if given.get("pooled_dtype") is None:
            given.pop("pooled_dtype", None)  # null means the default, float32
        return cls(**given)
