"""Seed-aware inference, measured: coverage and type-I error of the t reference, and the real
GB1 check against a t-test over per-seed deltas.

    python scripts/bench_seed_inference.py                       # simulations only
    python scripts/bench_seed_inference.py --results results     # + the real GB1 check

1. *Degrees of freedom* (a fast Monte Carlo of the variance model, 200,000 draws per cell):
   coverage of 95 % intervals `estimate +- t_df se` for plain Satterthwaite df and for the
   guarded df ptransfer uses (`inference.DF_GUARD`), by number of seeds S and by the ratio of
   seed sd to item SE; and how much wider the guarded intervals are.
2. *Through the project's functions* (`--runs` runs): simulated predictions, real bootstrap
   replicates, `intervals_table` and `compare`: coverage with 3 seeds (seed sd ~6x the item
   SE), type-I error of the two-arm test at nominal 5 %, and item-only coverage with 1 seed.
3. *Real GB1* (`--results DIR` holding a collected gb1 sweep with several random_init seeds):
   for each random_init arm vs one-hot at the best layer, the comparison's p against a
   one-sample t-test over the per-seed deltas (the issue's check: within a factor 3).
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


def df_table(draws: int = 200_000, n_items: int = 1000) -> pd.DataFrame:
    """Coverage of plain vs guarded Satterthwaite df under the variance model
    estimate = items + mean of S seed effects, item variance known to n - 1 df."""
    rng = np.random.default_rng(0)
    out = []
    for ratio in (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0):
        for n_seeds in (2, 3, 5):
            item = rng.normal(size=draws)
            seeds = rng.normal(size=(draws, n_seeds)) * ratio
            estimate = item + seeds.mean(axis=1)
            v_seed = seeds.var(axis=1, ddof=1) / n_seeds
            var = 1.0 + v_seed
            plain = var ** 2 / (1.0 / (n_items - 1) + v_seed ** 2 / (n_seeds - 1))
            upper = v_seed * (n_seeds - 1) / stats.chi2.ppf(DF_GUARD, n_seeds - 1)
            guarded = (1.0 + upper) ** 2 / (1.0 / (n_items - 1) + upper ** 2 / (n_seeds - 1))
            q_plain, q_guard = stats.t.ppf(0.975, plain), stats.t.ppf(0.975, guarded)
            out.append({"seed sd / item SE": ratio, "S": n_seeds,
                        "coverage plain": np.mean(np.abs(estimate) <= q_plain * np.sqrt(var)),
                        "coverage guarded": np.mean(np.abs(estimate) <= q_guard * np.sqrt(var)),
                        "width guarded / plain": float(np.median(q_guard / q_plain))})
    return pd.DataFrame(out)


def project_simulation(runs: int) -> dict:
    """The simulations of tests/test_inference.py, with more runs."""
    from test_inference import one_seed_rates, three_seed_rates

    coverage, rejection = three_seed_rates(runs)
    arm_coverage, delta_coverage = one_seed_rates(runs)
    return {"S=3 arm coverage": coverage, "S=3 type-I error": rejection,
            "S=1 arm coverage": arm_coverage, "S=1 delta coverage": delta_coverage}


def gb1_check(results: Path) -> pd.DataFrame:
    """Per random_init arm vs one-hot (best layer): p of the comparison vs a t-test."""
    from ptransfer.analysis.rows import read_results
    from ptransfer.analysis.summary import analyse

    frame = read_results(results / "results.csv")
    analysis = analyse(frame, results)
    rows = frame[(frame["main_metric"].astype(str) == "True") & (frame["eval_set"] == "test")
                 & (frame["best_layer"].astype(str) == "True")]
    out = []
    comparisons = analysis.comparisons
    mine = comparisons[(comparisons["layer_choice"] == "best") & (comparisons["b"] == "onehot")
                       & (comparisons["a"] == "random_init")]
    for _, row in mine.iterrows():
        seeds = rows[(rows["task"] == row["task"]) & (rows["model"] == row["model"])
                     & (rows["ablation"] == "random_init")]["value"].to_numpy()
        onehot = rows[(rows["task"] == row["task"]) & (rows["model"] == "onehot")]["value"]
        deltas = seeds - float(onehot.iloc[0])
        t_p = stats.ttest_1samp(deltas, 0.0).pvalue if len(deltas) > 1 else np.nan
        intervals = analysis.intervals
        item_se = intervals[(intervals["task"] == row["task"])
                            & (intervals["eval_set"] == row["eval_set"])
                            & (intervals["arm"] == "onehot")
                            & (intervals["layer_choice"] == "best")]["se"]
        out.append({"task": row["task"], "model": row["model"], "n_seeds": len(deltas),
                    "seed sd": float(np.std(seeds, ddof=1)) if len(seeds) > 1 else np.nan,
                    "one-hot item SE": float(item_se.iloc[0]) if len(item_se) else np.nan,
                    "delta": row["delta"], "df": row["df"], "p (ptransfer)": row["p_value"],
                    "p (t-test over seed deltas)": t_p,
                    "ratio": row["p_value"] / t_p if t_p else np.nan})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    pd.set_option("display.width", 160)
    start = time.perf_counter()
    print("1. df rule: coverage of 95 % intervals (Monte Carlo, 200,000 draws each)")
    print(df_table().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n2. through the project's functions, {args.runs} runs each")
    for name, value in project_simulation(args.runs).items():
        print(f"  {name}: {value:.3f}")
    if args.results is not None:
        print(f"\n3. real GB1 ({args.results})")
        print(gb1_check(args.results).to_string(index=False,
                                                float_format=lambda v: f"{v:.3g}"))
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
