"""The comparisons table, its decision families, and the three verdicts drawn from it.

Per (task, eval_set, model, checkpoint) -- a *group* -- one pretrained arm is the subject of
three decisions, each from its own rows at the best-validation layer (docs/statistics.md):

- ``transfer``: pretrained vs each comparable one-hot arm;
- ``pretraining``: pretrained vs each comparable ablation arm (random_init, stat_transfer,
  any scope);
- ``alignment_checkpoint`` / ``alignment_size``: pretrained vs every checkpoint at or
  before mid-pretraining / every smaller model of its family (``alignment``).

Holm's adjustment runs within one decision's rows (``holm_family``) that take part (a
p-value: refused rows do not): a verdict never depends on unrelated cells in the same
folder. Every other row (last layer, ablation vs one-hot, best vs last, other
configurations) is descriptive: its p is unadjusted and says so.

A decision is *better* when every row is better, *equivalent* when every row is equivalent
(intersection-union tests: each row at 5 %, no adjustment needed), *worse* when some row is
worse after Holm (a union claim); else *unresolved*. The alignment axes' rules are in
``alignment``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ptransfer.analysis.alignment import DECISION, plans
from ptransfer.analysis.bootstrap import Replicates
from ptransfer.analysis.comparisons import Arm, comparability, compare
from ptransfer.analysis.inference import ALPHA, LEVEL, holm, verdict
from ptransfer.analysis.margins import margin_for
from ptransfer.analysis.panels import GROUP, LAYER_CHOICES, ONEHOT_FAMILY

DECISIONS = ("transfer", "pretraining", "alignment_checkpoint", "alignment_size")
GROUP_INFO = ["family", "n_params", "checkpoint_step", "metric"]
NOT_A_DECISION = "not a decision row: p unadjusted"


def group_of(arm: Arm) -> tuple:
    return tuple(arm.key[k] for k in GROUP)


def final_checkpoints(arms: list[Arm]) -> dict[str, str]:
    """Model -> its final checkpoint: ``final`` when present, else the latest by step,
    fraction or order."""
    out: dict[str, tuple] = {}
    for arm in arms:
        k = arm.key
        rank = (k["checkpoint"] == "final",
                *(float(k[c]) if np.isfinite(float(k[c])) else -np.inf for c in
                  ("checkpoint_step", "checkpoint_fraction", "checkpoint_order")))
        if k["model"] not in out or rank > out[k["model"]][0]:
            out[k["model"]] = (rank, k["checkpoint"])
    return {model: name for model, (_, name) in out.items()}


def choose_pretrained(group: list[Arm], onehots: list[Arm]) -> tuple[Arm | None, list[Arm]]:
    """The group's pretrained arm under decision, and the other pretrained configurations.

    With several configurations (e.g. two precisions), the one comparable with the most
    baselines is decided on (then the one selected by cross-validation, ``selection`` cv,
    then fp32, then the first); the others stay descriptive.
    """
    pretrained = [a for a in group if a.key["ablation"] == "pretrained"]
    if not pretrained:
        return None, []
    partners = [a for a in group if a.key["ablation"] != "pretrained"] + onehots

    def rank(arm: Arm) -> tuple:
        comparable = sum(not comparability(arm, b) for b in partners)
        return (-comparable, arm.key["selection"] != "cv", arm.key["precision"] != "fp32")

    ordered = sorted(pretrained, key=rank)
    return ordered[0], ordered[1:]


def _decides(subject: Arm, partner: Arm, partners: list[Arm]) -> bool:
    """Whether ``subject`` vs ``partner`` is a row of the decision: yes unless ``partner``
    differs from it in selection alone and another arm of its ablation is comparable
    (``selection.method=auto`` writes a validation- and a cv-selected arm of each: the
    decision pairs like with like, the other pairing is descriptive). Any other refused
    row stays in the decision, whose evidence then says what could not be compared."""
    reason = comparability(subject, partner)
    if not reason.startswith("selection differs") or ";" in reason:
        return True
    siblings = [b for b in partners if b.key["ablation"] == partner.key["ablation"]
                and b.key["family"] == partner.key["family"]]
    return not any(not comparability(subject, b) for b in siblings)


def _record(head: dict, choice: str, a: Arm, la: list, b: Arm, lb: list, reps: Replicates,
            margins, decision: str = "", labels: tuple[str, str] | None = None) -> dict:
    a_label, b_label = labels or (a.label, b.label)
    return {**head, "layer_choice": choice, "decision": decision, "a": a_label, "b": b_label,
            **compare(a, la, b, lb, reps, margin_for(a.metric, margins), choice)}


def _group_records(head: dict, group: list[Arm], onehots: list[Arm], context: dict,
                   reps: Replicates, margins) -> list[dict]:
    subject, _ = choose_pretrained(group, onehots)
    pretrained = [a for a in group if a.key["ablation"] == "pretrained"]
    ablations = [a for a in group if a.key["ablation"] != "pretrained"]
    records = []
    for choice in LAYER_CHOICES:
        decided = choice == "best"
        for p in pretrained:
            for x in ablations:
                counts = decided and p is subject and _decides(subject, x, ablations)
                records.append(_record(head, choice, p, p.layers(choice), x, x.layers(choice),
                                       reps, margins, "pretraining" * counts))
        for x in [*pretrained, *ablations]:
            for o in onehots:
                counts = decided and x is subject and _decides(subject, o, onehots)
                records.append(_record(head, choice, x, x.layers(choice), o, o.layers(choice),
                                       reps, margins, "transfer" * counts))
    for a in group:
        records.append(_record(head, "best vs last", a, a.layers("best"), a, a.layers("last"),
                               reps, margins, labels=(f"{a.label} (best)", f"{a.label} (last)")))
    if subject is not None:
        records += _alignment_records(head, subject, context, reps, margins)
    return records


def _alignment_records(head: dict, subject: Arm, context: dict, reps: Replicates,
                       margins) -> list[dict]:
    """The subject against every early point of each axis (``alignment.plans``)."""
    records = []
    for axis, plan in plans(subject, context).items():
        for ref in plan.references:
            records.append(_record(head, "best", subject, subject.layers("best"), ref,
                                   ref.layers("best"), reps, margins, DECISION[axis],
                                   (plan.label(subject), plan.label(ref))))
    return records


HOLM_COLUMNS = {"p_value": "p_holm", "p_equiv": "p_equiv_holm",
                "p_not_better": "p_not_better_holm"}


def _adjust(table: pd.DataFrame) -> pd.DataFrame:
    """Holm within each decision family, over the rows that take part (a p-value: refused
    rows take none); descriptive rows unadjusted, and said so."""
    for column in HOLM_COLUMNS.values():
        table[column] = np.nan
    table["holm_family"] = NOT_A_DECISION
    decided = table["decision"] != ""
    for key, part in table[decided].groupby([*GROUP, "decision"], sort=False):
        name = f"{key[-1]}: {'/'.join(map(str, key[:-1]))}"
        taking_part = part[part["p_value"].notna()]
        for raw, adjusted in HOLM_COLUMNS.items():
            table.loc[taking_part.index, adjusted] = holm(taking_part[raw])
        n = len(taking_part)
        table.loc[taking_part.index, "holm_family"] = f"{name} ({n} row{'s' * (n != 1)})"
        table.loc[part.index.difference(taking_part.index), "holm_family"] = (
            f"{name}: takes no part (no p-value)")
    return table


def comparisons_table(arms: list[Arm], reps: Replicates, margins=None) -> pd.DataFrame:
    """Every comparison (module docstring), with Holm per decision family."""
    onehots: dict[tuple, list[Arm]] = {}
    groups: dict[tuple, list[Arm]] = {}
    for arm in arms:
        if arm.key["family"] == ONEHOT_FAMILY:
            onehots.setdefault((arm.key["task"], arm.key["eval_set"]), []).append(arm)
        else:
            groups.setdefault(group_of(arm), []).append(arm)
    encoders = [a for group in groups.values() for a in group]
    context = {"pretrained": [a for a in encoders if a.key["ablation"] == "pretrained"],
               "final": final_checkpoints(encoders)}
    records = []
    for key, group in groups.items():
        head = {**dict(zip(GROUP, key)), **{k: group[0].key[k] for k in GROUP_INFO}}
        records += _group_records(head, group, onehots.get(key[:2], []), context, reps,
                                  margins)
    return finish_table(records, reps, _adjust)


def finish_table(records: list[dict], reps: Replicates, adjust) -> pd.DataFrame:
    """``records`` as a comparisons table: Holm within each family (``adjust``), then the
    test level, interval level and resample count on every row."""
    table = pd.DataFrame(records)
    if table.empty:
        return table
    table = adjust(table)
    table["alpha"], table["level"], table["n_resamples"] = ALPHA, LEVEL, reps.n_resamples
    return table


# ---------------------------------------------------------------- verdicts of a decision


def holm_verdict(row: pd.Series) -> str:
    """The row's verdict with its family's Holm-adjusted p-values."""
    if row["verdict"] == "not comparable":
        return row["verdict"]
    return verdict(row["delta"], row["p_holm"], row["p_equiv_holm"])


def decide(rows: pd.DataFrame) -> str:
    """better / equivalent / worse / unresolved from one decision's comparable rows."""
    rows = rows[rows["verdict"] != "not comparable"]
    if rows.empty:
        return "unresolved"
    if (rows["verdict"] == "better").all():
        return "better"
    if (rows["verdict"] == "equivalent").all():
        return "equivalent"
    if (rows.apply(holm_verdict, axis=1) == "worse").any():
        return "worse"
    return "unresolved"
