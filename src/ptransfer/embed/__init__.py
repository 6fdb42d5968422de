"""Sequences -> per-layer features: the second stage of the pipeline.

- ``extract``: length-sorted token-budget batches, windows for long sequences, all layers
  from one forward pass, OOM split-and-retry; pooling to one vector per protein.
- ``store`` / ``store_files``: the content-addressed, crash-safe HDF5 embedding store and
  its on-disk format.
- ``settings``: ``ExtractSettings``, the extraction settings a cell hands down (plain values).
- ``features``: what a cell's heads read: features per (layer, split), from a store or, for
  the one-hot baseline, computed in memory.

Imports only from ``encoders`` and ``tasks`` (below it in the pipeline).
"""
