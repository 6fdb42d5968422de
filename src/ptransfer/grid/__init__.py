"""The experiment grid: one cell end to end, the sweep over cells, the plan of a sweep.

- ``cell``: one task x encoder x head cell, keyed by its effective config, resumable.
- ``sweep``: the Hydra job function, the design rules that skip non-cells, the sweep summary.
- ``plan``: what a sweep would do (cells, done cells, shared stores, disk, time) without running.

Top of the pipeline: imports ``heads``, ``embed``, ``encoders``, ``tasks`` and the rows schema
of ``analysis.rows``; nothing below imports it.
"""
