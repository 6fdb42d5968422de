"""ptransfer's Hydra sweeper plugin (Hydra finds plugins only under ``hydra_plugins``)."""
