"""A seeded synthetic fitness landscape for smoke runs (``+experiment=smoke``, ``task=synthetic``).

A random parent sequence is mutated at 1..``max_mutations`` of ``n_sites`` fixed sites;
each variant's fitness is

    f(v) = sum_i additive[site_i, aa_i] + sum_{i<j} pairwise[site_i, site_j, aa_i, aa_j] + noise

over its mutated sites i, with additive ~ N(0, 1), pairwise ~ N(0, epistasis^2) and noise
~ N(0, noise^2). Everything (parent, sites, effects, variants, the 70/15/15 split) derives
from ``seed`` alone, so every grid cell sees the same task. Needs no data files.
"""

from __future__ import annotations

from math import comb

import numpy as np

from ptransfer.tasks.assemble import assemble_task
from ptransfer.tasks.base import Task, TaskDataError
from ptransfer.tasks.validate import CANONICAL, Record

_AMINO = np.array(list(CANONICAL))


def make_landscape_task(name: str = "synthetic", seed: int = 0, length: int = 40,
                        n_variants: int = 600, n_sites: int = 6, max_mutations: int = 4,
                        epistasis: float = 0.5, noise: float = 0.1,
                        fractions: list[float] | tuple[float, ...] = (0.7, 0.15, 0.15),
                        overlap: str = "keep") -> Task:
    """A regression Task (metric spearman) of ``n_variants`` unique mutants, no parent."""
    _check_config(length, n_variants, n_sites, max_mutations, fractions)
    rng = np.random.default_rng(seed)
    parent = rng.integers(0, 20, size=length)  # L residue indices
    sites = np.sort(rng.choice(length, size=n_sites, replace=False))
    additive = rng.normal(0.0, 1.0, size=(n_sites, 20))  # S x 20
    pairwise = rng.normal(0.0, epistasis, size=(n_sites, n_sites, 20, 20))  # S x S x 20 x 20
    variants: dict[str, float] = {}
    while len(variants) < n_variants:
        k = int(rng.integers(1, max_mutations + 1))
        chosen = np.sort(rng.choice(n_sites, size=k, replace=False))  # indices into sites
        # shifting by 1..19 (mod 20) never gives back the parent residue
        new = (parent[sites[chosen]] + rng.integers(1, 20, size=k)) % 20
        fitness = additive[chosen, new].sum() + sum(
            pairwise[chosen[a], chosen[b], new[a], new[b]]
            for a in range(k) for b in range(a + 1, k))
        mutant = parent.copy()
        mutant[sites[chosen]] = new
        sequence = "".join(_AMINO[mutant])
        if sequence not in variants:
            variants[sequence] = float(fitness + rng.normal(0.0, noise))
    records = _split(list(variants.items()), fractions, rng)
    info = {"parent": "".join(_AMINO[parent]), "sites": [int(s) + 1 for s in sites],
            "seed": int(seed), "noise": noise, "epistasis": epistasis}
    return assemble_task(name=name, records=records, kind="regression", level="protein",
                         dataset=f"synthetic/seed{seed}", source="synthetic landscape",
                         info=info, overlap=overlap)


def _split(items: list[tuple[str, float]], fractions, rng: np.random.Generator
           ) -> dict[str, list[Record]]:
    order = rng.permutation(len(items))
    n_train = round(fractions[0] * len(items))
    n_val = round(fractions[1] * len(items))
    bounds = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
              "test": order[n_train + n_val:]}
    return {split: [Record(items[i][0], items[i][1], f"synthetic variant {i}")
                    for i in sorted(idx)]
            for split, idx in bounds.items()}


def _check_config(length, n_variants, n_sites, max_mutations, fractions) -> None:
    if not 1 <= n_sites <= length:
        raise TaskDataError(f"task.n_sites must be in [1, task.length={length}], got {n_sites}")
    if not 1 <= max_mutations <= n_sites:
        raise TaskDataError(f"task.max_mutations must be in [1, task.n_sites={n_sites}], "
                            f"got {max_mutations}")
    possible = sum(comb(n_sites, k) * 19**k for k in range(1, max_mutations + 1))
    if not 3 <= n_variants <= possible // 2:  # at most half: keeps rejection sampling quick
        raise TaskDataError(f"task.n_variants must be in [3, {possible // 2}] for these sites, "
                            f"got {n_variants}")
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise TaskDataError(f"task.fractions must be 3 positive numbers summing to 1, got "
                            f"{list(fractions)}")
