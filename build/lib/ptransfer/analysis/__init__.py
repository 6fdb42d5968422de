"""Results and conclusions: the rows schema, collect, summary tables, report and figures.

- ``rows``: the long-format result-row schema, writing a cell's rows, ``collect``.
- ``predictions``: the per-item predictions file every cell writes (paired across cells).
- ``panels``: per-panel scores (last and best-validation layer).
- ``intervals``: vectorised bootstrap replicates of a metric (cluster bootstrap over
  proteins), percentile intervals, Wald p-values, Holm.
- ``bootstrap``: replicates of every needed (cell, test set, layer) from the predictions.
- ``comparisons``: arms, the intervals table and the paired comparisons table.
- ``taxonomy``: the paper's task classes from comparisons and trends, with evidence.
- ``summary``: ``analyse`` and the summary tables; ``repstat``: the paper's one-sample test.
- ``report`` / ``plots``: the figures and ``index.html``.

Reads only files and tables; never loads a model or raw data. Rules: docs/statistics.md.
"""
