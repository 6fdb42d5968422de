"""Results and conclusions: the rows schema, collect, summary tables, report and figures.

- ``rows``: the long-format result-row schema, writing a cell's rows, ``collect``.
- ``summary``: per-panel score tables (last and best-validation layer).
- ``taxonomy``: the task classification from the summary scores.
- ``repstat``: the paper's one-sample test of pretrained against each ablation's seeds.
- ``report`` / ``plots``: the figures and ``index.html``.

Reads only files and tables; never loads a model or raw data.
"""
