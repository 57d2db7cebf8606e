"""The collect stage: ``run.collect(cfg, store, policy)`` rolls a policy out (``cfgrl.rollout``) into a
Zarr store, resumably; ``report.store_summary`` is what `cfgrl inspect STORE` prints."""
