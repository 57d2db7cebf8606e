"""The train stage: flow-matching training of a PI0 policy on the windows of a label index.

``cfgrl train STORE... --labels SPEC --out RUN_DIR`` (see ``cfgrl.train.trainer`` for the torchrun
forms). Modules, in the order a run uses them:

* ``cache``      decompressed, memory-mapped copy of exactly the windows the index names
* ``data``       whole-batch reads from the cache, the resumable per-rank batch sampler, device moves
* ``stats``      normalisation statistics streamed from the stores, mismatch report
* ``setup``      processes (torchrun / one process) and the policy (checkpoint or fresh preset)
* ``objectives`` cfgrl (default), filtered_bc and the weighted baseline; per-epoch conditions
* ``optim``      AdamW, PI0's warm-up + cosine schedule, EMA
* ``logging``    metrics reduced over ranks -> tqdm, TensorBoard, JSONL, wandb
* ``checkpoint`` atomic pickle-free checkpoints with a ``last`` pointer; old ones deleted (keep_last, keep_every)
* ``trainer``    the loop
"""
