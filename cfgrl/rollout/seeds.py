"""Episode seeds: each episode's seed is a pure function of its stream and integer keys, so an
episode is the same whatever the worker count, the batch it shares, the shard or how often its run
was resumed. The seed starts the episode's environment and its flow-noise generator
(``sources.flow_noise_generator``).

One derivation for every stage. The stream keeps stages apart: collect's (base seed, group,
rollout) never meets evaluation's (base seed, task, init state, repeat), and a validation episode
never shares a test episode's seed on the same init state (LIBERO's protocol validates on the test
init states). Seeds are data: a store records each episode's seed and an evaluation log keys each
episode by it, so the values are pinned (``tests/rollout/test_seeds.py``) and ``SCHEME`` is part of
every run identity (``specs.run_id``): a store or log written under an earlier derivation resumes as
a new run instead of mixing two kinds of seeds in one.
"""

from __future__ import annotations

import numpy as np

STREAMS = {"collect": 0, "test": 1, "validation": 2}
SCHEME = "episode_seed/2"  # 1: collect hashed its keys with sha256, evaluation had no stream key


def episode_seed(stream: str, *keys: int) -> int:
    """A seed below 2**63 (it fits the store's int64 seed column) for ``keys`` in ``stream``, e.g.
    ("collect", base seed, group, rollout) or ("test", base seed, task, init state, repeat)."""
    state = np.random.SeedSequence([STREAMS[stream], *(int(k) for k in keys)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))
