"""Episode seeds: each episode's seed is a pure function of integer keys, so an episode is the same
whatever the worker count, the batch it shares, the shard or how often its run was resumed. The
seed starts the episode's environment and its flow-noise generator (``sources.flow_noise_generator``).

Seeds are data: a store records each episode's seed, an evaluation log keys each episode by it, and
every number the README reports was measured with them. So the two derivations below are frozen
(``tests/rollout/test_seeds.py`` pins their values): collect's groups have hashed their keys since
the first store, evaluation's slots have used a ``SeedSequence``, and neither can be written as the
other without changing every existing seed. New callers use ``episode_seed``.
"""

from __future__ import annotations

import hashlib

import numpy as np


def episode_seed(*keys: int) -> int:
    """A seed below 2**63 (it fits the store's int64 seed column) from integer keys, e.g. evaluation's
    (base seed, task, init state, repeat[, 1 on validation])."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def group_rollout_seed(base_seed: int, group_id: int, rollout_index: int) -> int:
    """Collect's 56-bit seed of rollout ``rollout_index`` of group ``group_id``."""
    digest = hashlib.sha256(f"cfgrl-episode/{base_seed}/{group_id}/{rollout_index}".encode()).digest()
    return int.from_bytes(digest[:7], "little")
