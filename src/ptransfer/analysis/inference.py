"""Seed-aware inference: one t reference for every interval, p-value and equivalence test.

A score (an arm's seed mean) or a difference of scores has two sources of error:

- *items*: which test proteins were drawn. Its variance is the bootstrap variance of the
  statistic over the panel's item resamples (seeds held fixed), times ``n / (n - 1)`` (the
  bootstrap's plug-in variance of a mean is ``(n - 1) / n`` of the unbiased one; this is
  Hesterberg's small-sample expansion, which matters on CASP12's 21 proteins);
- *seeds*: which ablation / probe seeds were drawn. An arm with S >= 2 seeds contributes its
  between-seed variance ``s^2 / S`` (``s^2`` the sample variance of its per-seed scores on the
  fixed test set) with ``S - 1`` degrees of freedom. An arm with one seed contributes none
  (it cannot be estimated; pretrained arms with a deterministic probe have none).

The total variance is their sum; its degrees of freedom are Satterthwaite's, with each seed
term taken at its upper 75 % confidence bound (``DF_GUARD``). Intervals are
``estimate +- t_{df, 0.975} se``, p-values ``2 t_df.sf(|estimate| / se)`` and the equivalence
test is TOST against ``+-margin`` on the same t reference, so a p-value below 0.05 and an
interval excluding 0 always agree. Rules and their simulation checks: docs/statistics.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 0.05
P_FLOOR = 1e-16  # p-values are written no smaller: the approximations are not accurate beyond
MAX_UNDEFINED = 0.05  # more undefined bootstrap replicates than this: no inference
# Satterthwaite's df, fed a seed variance estimated from 3 seeds (2 df), is anti-conservative:
# a small s^2 by chance also raises the df (95 % intervals covered 92 % with seed sd 5x the
# item SE). Taking each seed term at its upper 75 % confidence bound in the df formula only
# (the variance itself is unchanged) keeps coverage within 95-96 % for S = 3..5 (94-97 % for
# S = 2) at every ratio of seed to item variance (docs/statistics.md, docs/benchmarks.md).
DF_GUARD = 0.25


def guarded(seed_variance: float, n_seeds: int) -> float:
    """A seed term ``s^2 / S`` at its upper (1 - DF_GUARD) confidence bound:
    ``(S - 1) s^2 / chi2_{S-1}(DF_GUARD) / S``."""
    return seed_variance * (n_seeds - 1) / stats.chi2.ppf(DF_GUARD, n_seeds - 1)


def item_variance(replicates: np.ndarray, n_items: int) -> float:
    """Bootstrap variance of a statistic over item resamples, small-sample corrected.

    NaN when more than ``MAX_UNDEFINED`` of the replicates are undefined (a constant
    prediction has no Spearman) or fewer than two are finite.
    """
    values = np.asarray(replicates, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size < (1.0 - MAX_UNDEFINED) * values.size or finite.size < 2:
        return float("nan")
    correction = n_items / (n_items - 1.0) if n_items and n_items > 1 else 1.0
    return float(np.var(finite, ddof=1) * correction)


def seed_term(per_seed: np.ndarray) -> tuple[float, int] | None:
    """(``s^2 / S``, ``S``) of ``S`` per-seed scores, or None with fewer than two seeds."""
    values = np.asarray(per_seed, dtype=float)
    if values.size < 2:
        return None
    return float(np.var(values, ddof=1) / values.size), int(values.size)


@dataclass
class Estimate:
    """A point estimate with its item variance and the seed terms of its arms."""

    value: float
    var_item: float
    n_items: int
    seed_terms: list[tuple[float, int]] = field(default_factory=list)

    @property
    def var(self) -> float:
        return self.var_item + sum(v for v, _ in self.seed_terms)

    @property
    def se(self) -> float:
        return float(np.sqrt(self.var)) if np.isfinite(self.var) else float("nan")

    @property
    def df(self) -> float:
        """Satterthwaite degrees of freedom (items: n - 1; seeds: S - 1), each seed term taken
        at its upper ``DF_GUARD`` confidence bound (see ``guarded``)."""
        parts = [(self.var_item, max(self.n_items - 1, 1))]
        parts += [(guarded(v, s), s - 1) for v, s in self.seed_terms]
        total = sum(v for v, _ in parts)
        denominator = sum(v * v / d for v, d in parts)
        if not np.isfinite(total) or denominator <= 0:
            return float(max(self.n_items - 1, 1))
        return float(total ** 2 / denominator)

    @property
    def valid(self) -> bool:
        return bool(np.isfinite(self.value) and np.isfinite(self.var))

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        if not self.valid:
            return float("nan"), float("nan")
        half = stats.t.ppf(0.5 + level / 2.0, self.df) * self.se
        return self.value - half, self.value + half

    def p_value(self) -> float:
        """Two-sided p of "the true value is 0" (NaN without variation: no test)."""
        if not self.valid or self.se <= 0:
            return float("nan")
        return floor_p(2.0 * stats.t.sf(abs(self.value) / self.se, self.df))

    def p_equivalence(self, margin: float | None) -> float:
        """TOST p of "|true value| >= margin": small when the value lies within +-margin.

        The larger of the two one-sided p-values; p < 0.05 exactly when the 90 % interval
        lies inside (-margin, margin). NaN without a margin; with zero variance, 0 or 1.
        """
        if margin is None or not np.isfinite(margin) or not self.valid:
            return float("nan")
        if self.se <= 0:
            return P_FLOOR if abs(self.value) < margin else 1.0
        lower = stats.t.sf((self.value + margin) / self.se, self.df)
        upper = stats.t.cdf((self.value - margin) / self.se, self.df)
        return floor_p(max(lower, upper))

    def p_not_better(self, margin: float | None) -> float:
        """One-sided p of "the true value is at least ``margin``" (non-superiority): small
        when the value is confidently below the margin, i.e. equivalent *or* worse.

        ``t_df.cdf((value - margin) / se)``; without a margin (``None``) the bound is 0, the
        one-sided test of "worse". The test behind "not aligned" (an early plateau or a
        decline), where equivalence and decline are one claim.
        """
        if not self.valid:
            return float("nan")
        bound = margin if margin is not None and np.isfinite(margin) else 0.0
        if self.se <= 0:
            return P_FLOOR if self.value < bound else 1.0
        return floor_p(stats.t.cdf((self.value - bound) / self.se, self.df))


def floor_p(p: float) -> float:
    return float(min(1.0, max(p, P_FLOOR))) if np.isfinite(p) else float("nan")


def show_p(p: float) -> str:
    """A p-value as text: two significant digits, ``< 1e-16`` at the floor, ``n/a``."""
    if not np.isfinite(p):
        return "n/a"
    return f"< {P_FLOOR:.0e}" if p <= P_FLOOR else f"{p:.2g}"


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries stay NaN and are not in the family)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if not m:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def verdict(delta: float, p: float, p_equiv: float, alpha: float = ALPHA) -> str:
    """better / equivalent / worse / unresolved for one difference (positive = better).

    Equivalent first: a difference inside the margin is practically none, even when it is
    significantly non-zero; otherwise better or worse when the two-sided test rejects 0.
    """
    if np.isfinite(p_equiv) and p_equiv < alpha:
        return "equivalent"
    if np.isfinite(p) and p < alpha and delta != 0:
        return "better" if delta > 0 else "worse"
    return "unresolved"
