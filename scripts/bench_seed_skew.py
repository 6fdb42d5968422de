"""Coverage of the seed-aware intervals when seed effects are skewed (issue 24, item 7).

    python scripts/bench_seed_skew.py [--runs 400] [--draws 200000]

The t reference with Satterthwaite df (``inference``) assumes that an arm's per-seed scores
scatter normally around the arm's mean. Random-init seeds need not: a seed that collapses
now and then gives a long lower tail. Two measurements, each for normal and for skewed seed
effects of the same sd (standardised: exponential, skewness 2; chi-square with 1 df,
skewness 2.8; log-normal with sigma 1, skewness 6.2):

1. *Variance model* (``--draws`` Monte Carlo draws per cell): estimate = item error + the
   mean of S seed effects, item variance known; coverage of the guarded t interval by S and
   by the ratio of seed sd to item SE.
2. *End to end* (``--runs`` runs, through the project's replicates, ``intervals_table``):
   three seeds whose probe quality is q0 + sd z, z from the distribution, on 1,000 proteins
   (seed sd ~6x the item SE, as ``tests/test_inference.py``); coverage of the arm's 95 %
   interval of its true mean score (Monte Carlo over z).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ptransfer.analysis.inference import DF_GUARD  # noqa: E402


def _standard(draw):
    """A zero-mean, unit-sd version of a sampler ``draw(rng, size)``."""
    sample = draw(np.random.default_rng(123), 2_000_000)
    mean, sd = sample.mean(), sample.std()
    return lambda rng, size: (draw(rng, size) - mean) / sd


DISTRIBUTIONS = {
    "normal": _standard(lambda rng, size: rng.normal(size=size)),
    "exponential (skew 2)": _standard(lambda rng, size: rng.exponential(size=size)),
    "chi-square 1 df (skew 2.8)": _standard(lambda rng, size: rng.chisquare(1, size=size)),
    "log-normal sigma 1 (skew 6.2)": _standard(lambda rng, size: rng.lognormal(0, 1, size)),
}


def variance_model(draws: int, n_items: int = 1000) -> pd.DataFrame:
    out = []
    for name, draw in DISTRIBUTIONS.items():
        rng = np.random.default_rng(0)
        for n_seeds in (3, 5):
            for ratio in (1.0, 3.0, 10.0):
                item = rng.normal(size=draws)
                seeds = draw(rng, (draws, n_seeds)) * ratio
                estimate = item + seeds.mean(axis=1)
                v_seed = seeds.var(axis=1, ddof=1) / n_seeds
                upper = v_seed * (n_seeds - 1) / stats.chi2.ppf(DF_GUARD, n_seeds - 1)
                df = (1.0 + upper) ** 2 / (1.0 / (n_items - 1) + upper ** 2 / (n_seeds - 1))
                half = stats.t.ppf(0.975, df) * np.sqrt(1.0 + v_seed)
                out.append({"seed effects": name, "S": n_seeds, "seed sd / item SE": ratio,
                            "coverage": float(np.mean(np.abs(estimate) <= half))})
    return pd.DataFrame(out)


def end_to_end(runs: int) -> pd.DataFrame:
    from test_inference import _simulate, g

    from ptransfer.analysis.comparisons import intervals_table

    q0, sd_q, n = 1.0, 0.25, 1000
    out = []
    for name, draw in DISTRIBUTIONS.items():
        truth = float(np.mean(g(q0 + sd_q * draw(np.random.default_rng(9), 2_000_000))))
        rng = np.random.default_rng(2024)
        hits = 0
        for _ in range(runs):
            arms, reps = _simulate(rng, n, 100, {"a": list(q0 + sd_q * draw(rng, 3))})
            row = intervals_table([arms["a"]], reps).set_index("layer_choice").loc["best"]
            hits += row["ci_low"] <= truth <= row["ci_high"]
        out.append({"seed effects": name, "S": 3, "runs": runs, "coverage": hits / runs})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--draws", type=int, default=200_000)
    args = parser.parse_args()
    start = time.time()
    print("1. variance model: coverage of the guarded t interval (nominal 0.95)")
    print(variance_model(args.draws).pivot_table(
        index=["seed effects", "S"], columns="seed sd / item SE",
        values="coverage").round(3).to_string())
    print(f"\n2. end to end, 3 seeds, 1,000 proteins, seed sd ~6x the item SE ({args.runs} runs)")
    print(end_to_end(args.runs).round(3).to_string(index=False))
    print(f"\n{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
