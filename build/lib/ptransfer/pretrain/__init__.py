"""Masked-LM pretraining of small ESM-2 / CARP models, writing a checkpoint series.

- ``train``: the training loop, schedule, resumable checkpoints and manifest (``run_pretrain``).
- ``mlm``: masking, loss and token-budget batches.
- ``corpus``: the pretraining sequences, with every task's test sequences removed.
- ``outputs``: ``manifest.csv`` and the ``model.yaml`` grid config of the series.
- ``adapters``: what differs between ESM-2 and CARP (tokens, logits, checkpoint format).
"""
