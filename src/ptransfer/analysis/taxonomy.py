"""The paper's task taxonomy, derived from three verdicts (rules: docs/statistics.md).

Per (task, eval_set, model, checkpoint), at the best-validation layer (``decisions``):

- ``transfer``: pretrained vs one-hot: better / equivalent / worse / unresolved;
- ``pretraining``: pretrained vs every ablation present: better / equivalent / worse /
  unresolved;
- ``alignment``: the late part of pretraining (else of model size) still improves: aligned /
  not aligned (an early plateau or a decline) / unresolved / unknown (no axis); each axis's
  own verdict and any disagreement between them are columns (``alignment``).

Classes: ``ALIGNED`` (transfer better, pretraining better, aligned); ``NOT_ALIGNED``
(transfer better, pretraining better, not aligned); ``NOT_FROM_PRETRAINING`` (transfer
better, pretraining equivalent or worse: the architecture or the weights' statistics
explain the benefit); ``NO_BENEFIT`` (transfer equivalent or worse); ``INCONCLUSIVE``
otherwise, naming what is missing. ``evidence`` is the sentence with every number behind
the class. Depth is described (``trend_depth``, ``depth``), never decided on.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ptransfer.analysis.alignment import (
    ABSENT,
    DECISION,
    SPAN,
    UNKNOWN,
    UNRESOLVED,
    axis_verdict,
    combine,
    plans,
)
from ptransfer.analysis.axes import TRENDS, describe_trend
from ptransfer.analysis.bootstrap import Replicates
from ptransfer.analysis.comparisons import Arm
from ptransfer.analysis.decisions import (
    choose_pretrained,
    decide,
    final_checkpoints,
    group_of,
)
from ptransfer.analysis.inference import show_p
from ptransfer.analysis.panels import GROUP, ONEHOT_FAMILY

ALIGNED = "aligned"
NOT_ALIGNED = "benefits, not aligned"
NOT_FROM_PRETRAINING = "benefit not from pretraining"
NO_BENEFIT = "no benefit"
INCONCLUSIVE = "inconclusive"
CLASSES = (ALIGNED, NOT_ALIGNED, NOT_FROM_PRETRAINING, NO_BENEFIT, INCONCLUSIVE)
COLUMNS = [*GROUP, "family", "metric", "margin", "class", "transfer", "pretraining",
           "alignment", "alignment_checkpoint", "alignment_size", "alignment_disagreement",
           "evidence",
           *[f"trend_{a}{s}" for a in TRENDS for s in ("", "_low", "_high", "_points")]]


def _num(value: float, digits: int = 3) -> str:
    return "nan" if not np.isfinite(value) else f"{value:+.{digits}f}"


def _family_size(holm_family: str) -> int:
    found = re.search(r"\((\d+) rows?\)$", str(holm_family))
    return int(found.group(1)) if found else 0


def describe_row(row: pd.Series) -> str:
    """"a vs b: verdict (delta [low, high], p, TOST p)" for one comparisons row; alignment
    rows add the non-superiority p ("not better by the margin")."""
    if row["verdict"] == "not comparable":
        return f"{row['a']} vs {row['b']}: not comparable ({row['not_comparable']})"
    detail = (f"{_num(row['delta'])} [{_num(row['ci_low'])}, {_num(row['ci_high'])}], "
              f"p {show_p(row['p_value'])}")
    several = _family_size(row["holm_family"]) > 1
    if np.isfinite(row["p_equiv"]):
        detail += f", within ±{row['margin']:g}: p {show_p(row['p_equiv'])}"
    if several:
        detail += f", Holm p {show_p(row['p_holm'])}"
    if str(row["decision"]).startswith("alignment") and np.isfinite(row["p_not_better"]):
        bound = row["margin"] if pd.notna(row["margin"]) else 0.0
        detail += f", not better by {bound:g}: p {show_p(row['p_not_better'])}"
        if several:
            detail += f" (Holm {show_p(row['p_not_better_holm'])})"
    if row["note"]:
        detail += f"; {row['note']}"
    return f"{row['a']} vs {row['b']}: {row['verdict']} ({detail})"


def _missing(decision: str, rows: pd.DataFrame) -> str:
    """What a decision lacks, in words ("" when it has a comparable row)."""
    what = {"transfer": "one-hot baseline", "pretraining": "random_init or stat_transfer arm"}
    if (rows["verdict"] != "not comparable").any():
        return ""
    if rows.empty:
        return f"no {what[decision]}"
    return f"no comparable {what[decision]} (present ones refused above)"


def _decision_text(name: str, word: str, rows: pd.DataFrame, missing: str) -> str:
    parts = [describe_row(r) for _, r in rows.iterrows()]
    return f"{name} {word}: " + "; ".join([*parts, *([missing] if missing else [])])


def classify(transfer: str, pretraining: str, alignment: str) -> str:
    if transfer in ("equivalent", "worse"):
        return NO_BENEFIT
    if transfer != "better":
        return INCONCLUSIVE
    if pretraining in ("equivalent", "worse"):
        return NOT_FROM_PRETRAINING
    if pretraining == "better" and alignment == "aligned":
        return ALIGNED
    if pretraining == "better" and alignment == "not aligned":
        return NOT_ALIGNED
    return INCONCLUSIVE


def _why_inconclusive(transfer: str, pretraining: str, alignment: str, axes: dict) -> str:
    if transfer != "better":
        return f"transfer {transfer}"
    if pretraining != "better":
        return f"transfer better, but the pretraining-specific benefit is {pretraining}"
    if alignment == UNKNOWN:
        return "alignment unknown: no checkpoint or size axis in these results"
    if axes["checkpoint"] == SPAN and axes["size"] in (ABSENT, UNRESOLVED):
        return "alignment unresolved: the checkpoint axis does not reach mid-pretraining"
    return "alignment unresolved"


def _alignment(mine: pd.DataFrame, subject: Arm, context: dict) -> tuple[dict, list[str]]:
    """The axis verdicts, the combined one, the disagreement and the evidence sentences."""
    words, texts = {}, []
    for axis, plan in plans(subject, context).items():
        rows = mine[mine["decision"] == DECISION[axis]]
        words[axis] = axis_verdict(rows, plan)
        if plan.state == ABSENT:
            continue
        parts = [plan.note] if plan.note else []
        parts += [describe_row(r) for _, r in rows.iterrows()]
        texts.append(f"{axis} axis {words[axis]}: " + "; ".join(parts))
    alignment, disagreement = combine(words["checkpoint"], words["size"])
    head = f"alignment {alignment}" + (f" ({disagreement})" if disagreement else "")
    out = {"alignment": alignment, "alignment_checkpoint": words["checkpoint"],
           "alignment_size": words["size"], "alignment_disagreement": disagreement}
    return out, ([head + ": " + ". ".join(texts)] if texts else [])


def _group_record(key: tuple, mine: pd.DataFrame, subject: Arm, context: dict,
                  reps: Replicates, warning: str = "") -> dict:
    words, texts = {}, []
    for decision in ("transfer", "pretraining"):
        rows = mine[mine["decision"] == decision]
        words[decision] = decide(rows)
        texts.append(_decision_text(decision, words[decision], rows,
                                    _missing(decision, rows)))
    alignment, alignment_texts = _alignment(mine, subject, context)
    words.update(alignment)
    texts += alignment_texts
    cls = classify(words["transfer"], words["pretraining"], words["alignment"])
    if cls == INCONCLUSIVE:
        texts.insert(0, "inconclusive: " + _why_inconclusive(
            words["transfer"], words["pretraining"], words["alignment"],
            {"checkpoint": words["alignment_checkpoint"], "size": words["alignment_size"]}))
    undefined = sorted({n for n in "; ".join(mine["note"]).split("; ") if "undefined" in n})
    record = {**dict(zip(GROUP, key)), "family": subject.key["family"],
              "metric": subject.metric, "margin": mine["margin"].iloc[0] if len(mine) else None,
              "class": cls, **words,
              "evidence": ". ".join(texts + undefined + ([warning] if warning else []))}
    for axis in TRENDS:
        record.update(describe_trend(axis, subject, context["pretrained"], context["final"],
                                     reps))
    return record


def taxonomy_table(arms: list[Arm], comparisons: pd.DataFrame, reps: Replicates,
                   warnings: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (task, eval_set, model, checkpoint) of the encoders: the three verdicts,
    the class and the evidence (ending with the task's selection warning, if any)."""
    encoders = [a for a in arms if a.key["family"] != ONEHOT_FAMILY]
    onehots = [a for a in arms if a.key["family"] == ONEHOT_FAMILY]
    context = {"pretrained": [a for a in encoders if a.key["ablation"] == "pretrained"],
               "final": final_checkpoints(encoders)}
    groups: dict[tuple, list[Arm]] = {}
    for arm in encoders:
        groups.setdefault(group_of(arm), []).append(arm)
    records = []
    for key, group in groups.items():
        panel_onehots = [o for o in onehots if (o.key["task"], o.key["eval_set"]) == key[:2]]
        subject, _ = choose_pretrained(group, panel_onehots)
        if subject is None:
            records.append({**dict(zip(GROUP, key)), "family": group[0].key["family"],
                            "metric": group[0].metric, "class": INCONCLUSIVE,
                            "transfer": "unresolved", "pretraining": "unresolved",
                            "alignment": "unknown",
                            "evidence": "inconclusive: no pretrained arm in these results"})
            continue
        mine = comparisons[(comparisons[GROUP] == pd.Series(dict(zip(GROUP, key)))).all(axis=1)
                           & (comparisons["decision"] != "")] if len(comparisons) else \
            pd.DataFrame(columns=["decision", "verdict", "note", "margin", "p_value"])
        records.append(_group_record(key, mine, subject, context, reps,
                                     (warnings or {}).get(key[0], "")))
    return pd.DataFrame(records).reindex(columns=COLUMNS)
