"""Alignment: does the late part of pretraining (or of model size) still improve the task?

Each axis compares the group's pretrained arm with the *whole early part* of its axis
(rules: docs/statistics.md, "Alignment"):

- *checkpoint*: every checkpoint of the model at or before half of the arm's own position
  (step, else fraction of pretraining, else order; ``axes.checkpoint_points``). Without
  one the axis does not reach mid-pretraining: ``SPAN``, never a plateau.
- *size*: every smaller model of the **same family** at its final checkpoint
  (``axes.size_points``); families are never mixed.

On its rows (one per early point, at the best-validation layer) an axis is

- ``aligned`` when every row is *better* (an intersection-union test: each row at 5 %);
- ``not aligned`` when some row is *not better by the margin* (equivalent: an early
  plateau, or worse: a decline) after Holm over the axis's rows (a union claim), from the
  one-sided non-superiority p (``inference.Estimate.p_not_better``);
- ``unresolved`` otherwise (``SPAN`` when the axis does not reach mid-pretraining);
- ``absent`` without an axis (one checkpoint, one model of the family).

The checkpoint axis decides when it is resolved, the size axis otherwise; when both are
resolved and disagree, ``disagreement`` says so (the checkpoint axis still decides).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ptransfer.analysis.axes import checkpoint_points, size_points
from ptransfer.analysis.comparisons import Arm
from ptransfer.analysis.inference import ALPHA

ALIGNED = "aligned"
NOT_ALIGNED = "not aligned"
UNRESOLVED = "unresolved"
SPAN = "unresolved: the axis does not reach mid-pretraining"
ABSENT = "absent"
UNKNOWN = "unknown"
RESOLVED = (ALIGNED, NOT_ALIGNED)
DECISION = {"checkpoint": "alignment_checkpoint", "size": "alignment_size"}


@dataclass
class AxisPlan:
    """The early points an axis compares the arm with, and what the evidence should say."""

    axis: str
    references: list[Arm] = field(default_factory=list)
    state: str = ""  # "" (compare), ABSENT or SPAN
    note: str = ""

    def label(self, arm: Arm) -> str:
        return (f"pretrained @ {arm.key['checkpoint']}" if self.axis == "checkpoint"
                else f"pretrained {arm.key['model']}")


def _fmt(x: float) -> str:
    return f"{x:g}"


def checkpoint_plan(subject: Arm, pretrained: list[Arm]) -> AxisPlan:
    """Every checkpoint at or before half of the subject's position on its axis."""
    scale, points = checkpoint_points(subject, pretrained)
    if len(points) < 2:
        return AxisPlan("checkpoint", state=ABSENT)
    mine = points[-1][0]
    early = [a for x, a in points[:-1] if x <= mine / 2.0]
    if not early:
        where = ", ".join(f"{a.key['checkpoint']} ({_fmt(x)})" for x, a in points)
        return AxisPlan("checkpoint", state=SPAN, note=(
            f"checkpoint axis: {where} by {scale}; none at or before half of "
            f"{_fmt(mine)}: the axis does not reach mid-pretraining"))
    return AxisPlan("checkpoint", early, note=(
        f"checkpoint axis by {scale}: {subject.key['checkpoint']} ({_fmt(mine)}) against "
        f"every checkpoint at or before {_fmt(mine / 2.0)}"))


def size_plan(subject: Arm, pretrained: list[Arm], final: dict[str, str]) -> AxisPlan:
    """Every smaller model of the subject's family, at its final checkpoint."""
    points = size_points(subject, pretrained, final)
    smaller = [a for x, a in points if x < float(subject.key["n_params"])]
    if not smaller:
        return AxisPlan("size", state=ABSENT)
    family = subject.key["family"]
    others = sorted({a.key["family"] for a in pretrained
                     if a.key["family"] != family
                     and (a.key["task"], a.key["eval_set"]) == (subject.key["task"],
                                                                 subject.key["eval_set"])})
    note = (f"size axis within family {family}: {subject.key['model']} against "
            + ", ".join(a.key["model"] for a in smaller))
    if others:
        note += f" (families are never mixed: {', '.join(others)} form their own axes)"
    return AxisPlan("size", smaller, note=note)


def plans(subject: Arm, context: dict) -> dict[str, AxisPlan]:
    return {"checkpoint": checkpoint_plan(subject, context["pretrained"]),
            "size": size_plan(subject, context["pretrained"], context["final"])}


def axis_verdict(rows: pd.DataFrame, plan: AxisPlan) -> str:
    """aligned / not aligned / unresolved (or ``SPAN`` / ``ABSENT``) of one axis's rows."""
    if plan.state:
        return plan.state
    rows = rows[rows["verdict"] != "not comparable"] if len(rows) else rows
    if rows.empty:
        return UNRESOLVED
    if (rows["verdict"] == "better").all():
        return ALIGNED
    if (rows["p_not_better_holm"] < ALPHA).any():
        return NOT_ALIGNED
    return UNRESOLVED


def combine(checkpoint: str, size: str) -> tuple[str, str]:
    """(alignment, disagreement): the checkpoint axis when resolved, else the size axis."""
    if checkpoint in RESOLVED:
        disagreement = (f"checkpoint axis {checkpoint}, size axis {size}: the checkpoint "
                        "axis decides" if size in RESOLVED and size != checkpoint else "")
        return checkpoint, disagreement
    if size in RESOLVED:
        return size, ""
    if checkpoint == ABSENT and size == ABSENT:
        return UNKNOWN, ""
    return UNRESOLVED, ""
