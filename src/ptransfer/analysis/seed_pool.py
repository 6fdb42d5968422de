"""Seed variance for a one-seed arm of a stochastic probe (rules: docs/statistics.md).

A probe is *stochastic* when two fits on the same features with different seeds give
different predictions. Of the project's probes only ``linear`` is: the softmax trained by
minibatch AdamW, whose epoch order comes from the cell's seed. ``ridge`` and ``streaming``
are closed-form (every alpha from one decomposition of the same sums) and ``logistic`` is
L-BFGS from zero on a convex loss: refitting gives the same probe. The rows name the probe
(``head``) and nothing else in them says whether it is stochastic, so ``STOCHASTIC_HEADS``
is the rule.

A stochastic arm with one seed has a seed variance that its own seeds cannot estimate (the
first rules added none: a one-seed softmax arm against a three-seed one rejected a true null
19.5 % of the time at nominal 5 %). It *borrows* one: the pooled between-seed variance of
the arms of the same probe (``head`` and ``head_config``) on the same test set that have
two or more defined seeds,

    s_p^2 = sum_k (S_k - 1) s_k^2 / sum_k (S_k - 1),   with sum_k (S_k - 1) degrees of freedom,

at the same layer choice (``best``, ``last``; for ``best vs last`` the per-seed differences).
Those arms are ablations, whose seeds also redraw the encoder's weights: their spread bounds
the probe's own from above, so the borrowed variance is conservative. With no such arm,
the arm's comparisons refuse a verdict (``better``, ``equivalent`` and ``worse``) and say why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STOCHASTIC_HEADS = frozenset({"linear"})
POOL_CHOICES = ("best", "last", "best vs last")


@dataclass
class SeedPool:
    """A pooled between-seed variance of one seed's score, its df and the arms it came from."""

    variance: float
    df: int
    sources: list[str]

    def describe(self) -> str:
        return (f"seed variance borrowed from {', '.join(self.sources)} (pooled, "
                f"sd {np.sqrt(self.variance):.3g}, {self.df} df)")


def is_stochastic(arm) -> bool:
    return arm.key["head"] in STOCHASTIC_HEADS


def one_stochastic_seed(arm, n_seeds: int) -> bool:
    """Whether an arm scored with ``n_seeds`` defined seeds lacks a seed variance it has."""
    return n_seeds == 1 and is_stochastic(arm)


def _pool_key(arm, choice: str) -> tuple:
    k = arm.key
    return (k["task"], k["eval_set"], k["head"], k["head_config"], choice)


def _per_seed(arm, choice: str) -> np.ndarray:
    """The arm's defined per-seed values at ``choice`` (best - last per seed for the pair)."""
    if choice != "best vs last":
        return arm.scores(arm.layers(choice), None).values
    best, last = arm.scores(arm.layers("best"), None), arm.scores(arm.layers("last"), None)
    common = [s for s in best.seeds if s in last.seeds]
    return np.array([best.values[best.seeds.index(s)] - last.values[last.seeds.index(s)]
                     for s in common])


def _source(arm, n_seeds: int) -> str:
    k = arm.key
    return f"{k['model']} @ {k['checkpoint']} {arm.label} ({n_seeds} seeds)"


def attach_pools(arms: list) -> None:
    """Give every stochastic arm ``pool[choice]``: the pooled seed variance of its probe on
    its test set (None where no same-probe arm has two or more defined seeds)."""
    sums: dict[tuple, list] = {}
    for arm in arms:
        if not is_stochastic(arm):
            continue
        for choice in POOL_CHOICES:
            values = _per_seed(arm, choice)
            if values.size >= 2:
                entry = sums.setdefault(_pool_key(arm, choice), [0.0, 0, []])
                entry[0] += float(np.var(values, ddof=1)) * (values.size - 1)
                entry[1] += values.size - 1
                entry[2].append(_source(arm, values.size))
    for arm in arms:
        if is_stochastic(arm):
            arm.pool = {c: (SeedPool(s / d, d, names) if d else None)
                        for c in POOL_CHOICES
                        for s, d, names in [sums.get(_pool_key(arm, c), (0.0, 0, []))]}


def refusal(arm) -> str:
    return (f"{arm.label}: one seed of a stochastic probe ({arm.key['head']}) and no "
            "same-probe arm with >= 2 seeds on this test set to borrow a seed variance from: "
            "no verdict")
