"""The verdicts fine-tune cells add (``tune=lora|full``; method: docs/finetune.md).

The paper's analysis (``decisions``, ``taxonomy``) runs on frozen arms only, so its classes
stay the paper's. Per group (task, eval_set, model, checkpoint) and per fine-tune
configuration (mode and settings: the arm's ``head_config``), two decisions:

- ``finetune_gain``: the pretrained fine-tuned arm vs each of the same model's pretrained
  frozen arms at their best-validation layer. The two differ in their head by design (an MLP
  on a trained network vs a probe on fixed features), so head and head config are not
  required to match; data, precision, length policy, store dtype and revision are.
- ``pretraining_finetuned``: the pretrained fine-tuned arm vs each ablation (random_init,
  stat_transfer) fine-tuned with the same settings: is the gain from pretraining, or from
  training the network at all?

Descriptive rows (no decision, p unadjusted): every ablation's fine-tuned arm vs its own
frozen arm, and vs the pretrained frozen arm (Schmirler et al.'s "from scratch vs frozen
pretrained"). Holm's adjustment runs within one decision of one group and configuration.
Each decision is better / equivalent / worse / unresolved (``decisions.decide``); a group
without the arms is ``absent``. The taxonomy gains ``finetune_gain``,
``pretraining_finetuned`` (``mode=verdict`` per configuration) and ``finetune_evidence``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ptransfer.analysis.bootstrap import Replicates
from ptransfer.analysis.comparisons import Arm, compare
from ptransfer.analysis.decisions import (
    GROUP_INFO,
    NOT_A_DECISION,
    decide,
    finish_table,
    group_of,
)
from ptransfer.analysis.inference import holm
from ptransfer.analysis.margins import margin_for
from ptransfer.analysis.panels import GROUP, ONEHOT_FAMILY

FROZEN = "frozen"
DECISIONS = ("finetune_gain", "pretraining_finetuned")
# What a fine-tuning gain compares across: the head, and the selection (a fine-tune picks
# its epoch and learning rate on validation; the frozen arm is the one the decisions use).
ACROSS_HEADS = ("head", "head_config", "selection")
COLUMNS = [*DECISIONS, "finetune_evidence"]


def frozen_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of frozen cells (no ``tune`` value: frozen): what the paper's summary and the
    per-layer figures show."""
    return df[df["tune"].fillna(FROZEN) == FROZEN] if "tune" in df else df


def tunes_of(rows: pd.DataFrame) -> dict[str, str]:
    """cell_id -> tune mode (rows without a ``tune`` value: frozen)."""
    tune = rows["tune"].fillna(FROZEN) if "tune" in rows else pd.Series(FROZEN, rows.index)
    return dict(zip(rows["cell_id"], tune.astype(str)))


def arm_tune(arm: Arm, tunes: dict[str, str]) -> str:
    return tunes.get(str(arm.cells["cell_id"].iloc[0]), FROZEN)


def _label(arm: Arm, tune: str) -> str:
    return f"{arm.label} {tune}"


def _across_heads(arm: Arm, like: Arm) -> Arm:
    """``arm`` seen with ``like``'s head: the one difference a fine-tuning gain allows."""
    return Arm({**arm.key, **{k: like.key[k] for k in ACROSS_HEADS}}, arm.cells,
               arm.layer_values)


def _row(head: dict, a: Arm, ta: str, b: Arm, tb: str, reps: Replicates, margins,
         decision: str, config: str) -> dict:
    a_seen = _across_heads(a, b) if ta != tb else a
    return {**head, "layer_choice": "best", "decision": decision, "a": _label(a, ta),
            "b": _label(b, tb), "tune_config": config,
            **compare(a_seen, a.layers("best"), b, b.layers("best"), reps,
                      margin_for(a.metric, margins))}


def _group_rows(head: dict, group: list[Arm], tunes: dict[str, str], reps: Replicates,
                margins) -> list[dict]:
    frozen = [a for a in group if arm_tune(a, tunes) == FROZEN]
    frozen_pretrained = [a for a in frozen if a.key["ablation"] == "pretrained"]
    # selection.method=auto: the cross-validated frozen arm is the one the decisions use
    reference = [a for a in frozen_pretrained if a.key["selection"] == "cv"] or frozen_pretrained
    records = []
    tuned = [a for a in group if arm_tune(a, tunes) != FROZEN]
    for config in dict.fromkeys(a.key["head_config"] for a in tuned):
        arms = [a for a in tuned if a.key["head_config"] == config]
        mode = arm_tune(arms[0], tunes)
        label = f"{mode} {config}"
        for t in arms:
            subject = t.key["ablation"] == "pretrained"
            for f in frozen_pretrained:
                decides = subject and any(f is r for r in reference)
                records.append(_row(head, t, mode, f, FROZEN, reps, margins,
                                    "finetune_gain" if decides else "", label))
            for f in frozen:
                if not subject and f.key["ablation"] == t.key["ablation"] and \
                        f.key["ablation_scope"] == t.key["ablation_scope"]:
                    records.append(_row(head, t, mode, f, FROZEN, reps, margins, "", label))
            if subject:
                for x in arms:
                    if x.key["ablation"] != "pretrained":
                        records.append(_row(head, t, mode, x, mode, reps, margins,
                                            "pretraining_finetuned", label))
    return records


def _adjust(table: pd.DataFrame) -> pd.DataFrame:
    """Holm within each decision of one group and fine-tune configuration."""
    table["p_holm"] = np.nan
    table["p_equiv_holm"] = np.nan
    table["holm_family"] = NOT_A_DECISION
    decided = table["decision"] != ""
    for key, part in table[decided].groupby([*GROUP, "tune_config", "decision"], sort=False):
        table.loc[part.index, "p_holm"] = holm(part["p_value"])
        table.loc[part.index, "p_equiv_holm"] = holm(part["p_equiv"])
        where = "/".join(map(str, key[:-2]))
        table.loc[part.index, "holm_family"] = f"{key[-1]}: {where} {key[-2]} ({len(part)} rows)"
    return table


def finetune_comparisons(arms: list[Arm], tunes: dict[str, str], reps: Replicates,
                         margins=None) -> pd.DataFrame:
    """Every fine-tuning comparison (module docstring); empty without fine-tune arms."""
    groups: dict[tuple, list[Arm]] = {}
    for arm in arms:
        if arm.key["family"] != ONEHOT_FAMILY:
            groups.setdefault(group_of(arm), []).append(arm)
    records = []
    for key, group in groups.items():
        if all(arm_tune(a, tunes) == FROZEN for a in group):
            continue
        head = {**dict(zip(GROUP, key)), **{k: group[0].key[k] for k in GROUP_INFO}}
        records += _group_rows(head, group, tunes, reps, margins)
    return finish_table(records, reps, _adjust)


def _evidence(rows: pd.DataFrame) -> str:
    def number(x) -> str:
        return f"{x:+.3f}" if np.isfinite(x) else "n/a"

    parts = []
    for _, r in rows.iterrows():
        interval = (f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                    if np.isfinite(r["ci_low"]) else "")
        parts.append(f"{r['a']} vs {r['b']}: {number(r['delta'])}{interval} {r['verdict']}")
    return "; ".join(parts)


def finetune_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per group: ``mode=verdict`` of each decision for each configuration, and evidence."""
    if table.empty:
        return pd.DataFrame(columns=[*GROUP, *COLUMNS])
    records = []
    for key, rows in table.groupby(GROUP, sort=False):
        record = dict(zip(GROUP, key))
        configs = list(dict.fromkeys(rows["tune_config"]))
        modes = [c.split()[0] for c in configs]
        names = {c: m if modes.count(m) == 1 else c for c, m in zip(configs, modes)}
        for decision in DECISIONS:
            words = []
            for config in configs:
                mine = rows[(rows["tune_config"] == config) & (rows["decision"] == decision)]
                words.append(f"{names[config]}={decide(mine) if len(mine) else 'absent'}")
            record[decision] = ", ".join(words)
        record["finetune_evidence"] = _evidence(rows[rows["decision"] != ""])
        records.append(record)
    return pd.DataFrame(records, columns=[*GROUP, *COLUMNS])


def with_finetune(taxonomy: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """The taxonomy with the fine-tuning columns (unchanged when there are no fine-tunes)."""
    if verdicts.empty:
        return taxonomy
    if taxonomy.empty:
        return verdicts
    return taxonomy.merge(verdicts, on=GROUP, how="outer")
