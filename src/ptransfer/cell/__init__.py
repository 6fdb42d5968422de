"""One cell, end to end: task x encoder (checkpoint, ablation, seed) x head, every layer.

Read top-down as the cell runs:

- ``spec``: the door. ``cell_spec(cfg)`` reads the composed Hydra config once into a frozen
  ``CellSpec`` (task reference, encoder identity with its weights' fingerprint, head,
  extraction settings, output folders); every stage below takes the spec or plain values.
- ``config_checks`` / ``config_values``: the composed config checked before anything runs
  (unknown keys, types, unsafe names, writable folders), and what a loaded task allows.
- ``task_data``: the task loaded, its content fingerprint memoised, its declared shape checked.
- ``key``: the cell's key (hash of its effective config) and its encoder's store identity.
- ``encoder``: the encoder configured, or loaded with its weights when the cell runs it.
- ``memory``: one-hot width and memory, refused before it cannot fit.
- ``fit``: features of every layer and one probe per layer.
- ``rows`` / ``predictions``: the tidy rows (with the configuration columns comparisons
  need) and the per-item predictions.
- ``status`` / ``logs``: status.json (running, done, failed, interrupted) and log lines
  that name their cell.
- ``run``: ``run_cell`` ties them together and writes the cell's folder.

Imports ``heads``, ``embed``, ``encoders``, ``tasks`` and the rows schema of ``analysis``;
``sweep`` imports it, never the reverse. ``DictConfig`` appears only at the door
(``spec``, ``run``) and in the config checks.
"""
