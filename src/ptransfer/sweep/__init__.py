"""Many cells: a sweep's combinations, its plan, its jobs and their launch, devices, stores.

- ``expand``: a sweep's combinations and their configs (one compose per choice).
- ``design``: which combinations are cells of the study (``grid.*`` rules).
- ``jobs``: the sweep's jobs: cells to run and the shards of the stores they read.
- ``plan`` / ``checkpoint_plan``: ``ptransfer plan``: those jobs, disk, GPU time, memory,
  checkpoints, printed without running anything.
- ``launch``: the sweeper's work: extraction jobs, then cells, through any Hydra launcher.
- ``job``: the Hydra job function: one cell or one shard; ``shard_job``: one shard.
- ``prepare``: weights fetched and stores rebuilt before cells run.
- ``devices``: one GPU slot per concurrent job; ``retention``: stores deleted when unread;
  ``readers``: the readers manifests for other sweepers.
- ``done``: a finished sweep recognised before Hydra starts; ``task_names``: one task name
  means one task; ``summary``: what a sweep says at its end.

Top of the pipeline: imports ``cell`` (each cell through its spec), ``embed`` and
``analysis``; nothing imports it but the CLI and the Hydra sweeper plugin.
"""
