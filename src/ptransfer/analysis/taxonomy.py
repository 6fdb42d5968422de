"""The paper's task taxonomy, derived from three verdicts (rules: docs/statistics.md).

Per (task, eval_set, model, checkpoint), at the best-validation layer (``decisions``):

- ``transfer``: pretrained vs one-hot: better / equivalent / worse / unresolved;
- ``pretraining``: pretrained vs every ablation present: better / equivalent / worse /
  unresolved;
- ``alignment``: the late part of the checkpoint and size axes still improves: aligned /
  not aligned (an early plateau or a decline) / unresolved / unknown (no axis).

Classes: ``ALIGNED`` (transfer better, pretraining better, aligned); ``NOT_ALIGNED``
(transfer better, not aligned); ``NO_BENEFIT`` (transfer equivalent or worse);
``INCONCLUSIVE`` otherwise, naming what is missing. ``evidence`` is the sentence with every
number behind the class. Depth is described (``trend_depth``), never decided on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ptransfer.analysis.axes import TRENDS, describe_trend
from ptransfer.analysis.bootstrap import Replicates
from ptransfer.analysis.comparisons import Arm
from ptransfer.analysis.decisions import (
    choose_pretrained,
    decide,
    decide_alignment,
    final_checkpoints,
    group_of,
)
from ptransfer.analysis.inference import show_p
from ptransfer.analysis.panels import GROUP, ONEHOT_FAMILY

ALIGNED = "aligned"
NOT_ALIGNED = "benefits, not aligned"
NO_BENEFIT = "no benefit"
INCONCLUSIVE = "inconclusive"
CLASSES = (ALIGNED, NOT_ALIGNED, NO_BENEFIT, INCONCLUSIVE)
AXIS_DECISIONS = {"checkpoint": "alignment_checkpoint", "size": "alignment_size"}
COLUMNS = [*GROUP, "family", "metric", "margin", "class", "transfer", "pretraining",
           "alignment", "alignment_checkpoint", "alignment_size", "evidence",
           *[f"trend_{a}{s}" for a in TRENDS for s in ("", "_low", "_high", "_points")]]


def _num(value: float, digits: int = 3) -> str:
    return "nan" if not np.isfinite(value) else f"{value:+.{digits}f}"


def describe_row(row: pd.Series) -> str:
    """"a vs b: verdict (delta [low, high], p, TOST p)" for one comparisons row."""
    if row["verdict"] == "not comparable":
        return f"{row['a']} vs {row['b']}: not comparable ({row['not_comparable']})"
    detail = (f"{_num(row['delta'])} [{_num(row['ci_low'])}, {_num(row['ci_high'])}], "
              f"p {show_p(row['p_value'])}")
    if np.isfinite(row["p_equiv"]):
        detail += f", within ±{row['margin']:g}: p {show_p(row['p_equiv'])}"
    if row["holm_family"] and int(row["holm_family"].rsplit("(", 1)[-1].split()[0]) > 1:
        detail += f", Holm p {show_p(row['p_holm'])}"
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
    if transfer == "better" and alignment == "aligned" and pretraining == "better":
        return ALIGNED
    if transfer == "better" and alignment == "not aligned":
        return NOT_ALIGNED
    return INCONCLUSIVE


def _why_inconclusive(transfer: str, pretraining: str, alignment: str) -> str:
    if transfer != "better":
        return f"transfer {transfer}"
    if alignment in ("unknown", "unresolved"):
        return ("alignment unknown: no checkpoint or size axis in these results"
                if alignment == "unknown" else "alignment unresolved")
    return f"aligned, but the pretraining-specific benefit is {pretraining}"


def _group_record(key: tuple, mine: pd.DataFrame, subject: Arm, context: dict,
                  reps: Replicates) -> dict:
    words, texts = {}, []
    for decision in ("transfer", "pretraining"):
        rows = mine[mine["decision"] == decision]
        words[decision] = decide(rows)
        texts.append(_decision_text(decision, words[decision], rows,
                                    _missing(decision, rows)))
    for decision in AXIS_DECISIONS.values():
        rows = mine[mine["decision"] == decision]
        words[decision] = decide(rows) if len(rows) else "absent"
    alignment_rows = mine[mine["decision"].isin(AXIS_DECISIONS.values())]
    words["alignment"] = decide_alignment(alignment_rows)
    if len(alignment_rows):
        texts.append(_decision_text("alignment", words["alignment"], alignment_rows, ""))
    cls = classify(words["transfer"], words["pretraining"], words["alignment"])
    if cls == INCONCLUSIVE:
        texts.insert(0, "inconclusive: " + _why_inconclusive(
            words["transfer"], words["pretraining"], words["alignment"]))
    undefined = sorted({n for n in "; ".join(mine["note"]).split("; ") if "undefined" in n})
    record = {**dict(zip(GROUP, key)), "family": subject.key["family"],
              "metric": subject.metric, "margin": mine["margin"].iloc[0] if len(mine) else None,
              "class": cls, **words, "evidence": ". ".join(texts + undefined)}
    for axis in TRENDS:
        record.update(describe_trend(axis, subject, context["pretrained"], context["final"],
                                     reps))
    return record


def taxonomy_table(arms: list[Arm], comparisons: pd.DataFrame, reps: Replicates
                   ) -> pd.DataFrame:
    """One row per (task, eval_set, model, checkpoint) of the encoders: the three verdicts,
    the class and the evidence."""
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
            pd.DataFrame(columns=["decision", "verdict", "note", "margin"])
        records.append(_group_record(key, mine, subject, context, reps))
    return pd.DataFrame(records).reindex(columns=COLUMNS)
