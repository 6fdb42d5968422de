"""The sweep's job order and its model (``sweep.schedule``), against schedules worked out by
hand."""

from __future__ import annotations

import pytest

from ptransfer.sweep import schedule


@pytest.fixture()
def bench():
    return schedule


def _stores(bench):
    """Four stores, each a 9-minute and a 0.1-minute shard, each read by one 10-minute
    probe: the paper grid's shape in small (a tiny shard beside big ones)."""
    jobs = []
    for store in "ABCD":
        jobs += [bench.Job(f"{store}1", "gpu", 9.0, phase=1),
                 bench.Job(f"{store}2", "gpu", 0.1, phase=1)]
    jobs += [bench.Job(f"R{store}", "cpu", 10.0, (f"{store}1", f"{store}2"), phase=2)
             for store in "ABCD"]
    return jobs


def test_a_stores_shards_run_together_so_its_readers_start_early(bench):
    # 2 GPUs, 1 CPU. A's shards first (t 0-9, 0-0.1), then B1 (0.1-9.1), B2 (9-9.1), C1
    # (9.1-18.1), C2 (9.1-9.2), D1 (9.2-18.2), D2 (18.1-18.2); the probes one after the
    # other from A's at t 9: 9-19, 19-29, 29-39, 39-49. (Longest shards first regardless of
    # stores would finish every store at ~18.1 and end at 58.2.)
    makespan, starts = bench.simulate(_stores(bench), {"gpu": 2, "cpu": 1})
    assert makespan == pytest.approx(49.0)
    assert [starts[name] for name in ("A1", "A2", "B1", "B2", "C1", "C2", "D1", "D2")] == \
        pytest.approx([0.0, 0.0, 0.1, 9.0, 9.1, 9.1, 9.2, 18.1])
    assert [starts[f"R{s}"] for s in "ABCD"] == pytest.approx([9.0, 19.0, 29.0, 39.0])


def test_the_lower_bound_and_todays_barriers(bench):
    jobs = _stores(bench)
    # GPU work 4 x 9.1 = 36.4 over 2 GPUs = 18.2; the longest chain 9 + 10 = 19.
    assert bench.lower_bound(jobs, 2) == pytest.approx((18.2, 19.0))
    # Phase 1 in list order on 2 workers ends at 18.2 (D1 from 9.2); then the 4 probes on
    # 2 workers take 20: 38.2. A wave per store: (9 + 10) x 4 = 76.
    assert bench.barriers(jobs, 2) == pytest.approx(38.2)
    waves = [bench.Job(j.name, j.kind, j.seconds, j.deps, wave="ABCD".index(
        j.name[-1] if j.phase == 2 else j.name[0]), phase=j.phase) for j in jobs]
    assert bench.barriers(waves, 2) == pytest.approx(76.0)


def test_a_kind_without_slots_is_an_error(bench):
    with pytest.raises(ValueError, match="4 jobs never ran"):
        bench.simulate(_stores(bench), {"gpu": 2, "cpu": 0})
