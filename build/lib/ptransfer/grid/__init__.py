"""The experiment grid: one cell end to end, the sweep over cells, the plan of a sweep.

- ``cell``: one task x encoder x head cell, keyed by its effective config, resumable.
- ``sweep``: the Hydra job function, the design rules that skip non-cells, the sweep summary.
- ``plan``: what a sweep would do (cells, done cells, shared stores, disk, time) without running.
- ``task_data``: loading a cell's task, its memoised content fingerprint, its shape from config.
- ``cell_predictions``: a cell's per-item predictions in the ``analysis.predictions`` schema.

Top of the pipeline: imports ``heads``, ``embed``, ``encoders``, ``tasks`` and the rows schema
of ``analysis.rows`` and ``analysis.predictions``; nothing below imports it.
"""
