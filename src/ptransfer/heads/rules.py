"""Which probe a task gets: the head rule, from the task's level and kind alone.

Its own module, importing nothing heavy: the grid keys and plans cells with it
(``cell.task_data.planned_head``) without loading scipy, scikit-learn or torch.
"""

from __future__ import annotations

# head=auto: the probe family is a function of the task alone (level, kind), never of the
# encoder, so every encoder of a task (one-hot included) is compared under the same probe.
# Per residue the streaming ridge classifier: it needs no feature cache and fits any encoder.
AUTO_HEADS = {
    ("protein", "regression"): "ridge",
    ("protein", "classification"): "logistic",
    ("residue", "classification"): "streaming",
}
HEADS_ALLOWED = {
    ("protein", "regression"): {"ridge"},
    ("protein", "classification"): {"logistic", "linear"},
    ("residue", "classification"): {"linear", "streaming"},
}


def head_for(name: str, level: str, kind: str, task_name: str) -> str:
    """The probe of a task of this level and kind: ``name`` unless it is ``auto``."""
    if name == "auto":
        if (level, kind) not in AUTO_HEADS:
            raise ValueError(f"head=auto: no probe for task {task_name!r} ({level} {kind})")
        return AUTO_HEADS[(level, kind)]
    allowed = HEADS_ALLOWED.get((level, kind), set())
    if name not in allowed:
        raise ValueError(
            f"head={name} does not fit task {task_name!r} ({level} {kind}); "
            f"choose one of {sorted(allowed)} or head=auto"
        )
    return name
