"""Task loaders. Each returns a :class:`ptransfer.tasks.base.Task` and is instantiated by
Hydra from ``conf/task/<name>.yaml`` through its ``_target_``:

- :func:`load_flip_task`: FLIP CSV splits (GB1, AAV, Meltome, SCL), per-protein.
- :func:`load_ss3_task`: 3-state secondary structure, per-residue.
- :func:`load_csv_task`: a user's own CSV, per-protein.
- :func:`make_landscape_task`: a seeded synthetic fitness landscape (no files).

Input checks and the duplicate policy shared by all of them live in ``validate``.
"""

from ptransfer.tasks.base import IGNORE, Split, Task, TaskDataError
from ptransfer.tasks.flip import load_flip_task
from ptransfer.tasks.ss3 import load_ss3_task
from ptransfer.tasks.synthetic import make_landscape_task
from ptransfer.tasks.user_csv import load_csv_task

__all__ = [
    "IGNORE",
    "Split",
    "Task",
    "TaskDataError",
    "load_csv_task",
    "load_flip_task",
    "load_ss3_task",
    "make_landscape_task",
]
