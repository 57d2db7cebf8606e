"""LIBERO scenes beyond the benchmark's 50 fixed init states: layouts drawn from its own placement regions.

LIBERO's test set is the 50 init states shipped per task (ids 0-49), so training and validation need
other scenes of the same task. Init state id ``k >= 50`` names the layout that the task's own
placement samplers (the BDDL regions LIBERO drew its 50 from) draw when numpy's global generator,
which they read, is seeded from (``env.benchmark_seed``, suite, task, k). The layout is kept in
LIBERO's own form, the simulator's flattened state (time, qpos, qvel) right after placement, as the
fixed init states are, and a store records it per episode as ``init_config``: the episode replays
from it exactly, and splits compare scenes by it, not by id. The ids are never reused for the fixed
states, and a drawn layout is never one of them (tested).

Importing this module imports neither LIBERO nor MuJoCo: the evaluation plan reads its constants.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from cfgrl.errors import CfgrlError

FIXED_INIT_STATES = 50  # per task, in every LIBERO suite: the test set
DRAWN_INIT_STATES = 1_000_000 - FIXED_INIT_STATES  # ids 50..999999 name drawn layouts
VALIDATION_INIT_STATES = list(range(50, 100))  # evaluate.protocol=libero's validation, unless set
_LAYOUT_SALT = 0x1A70


def is_drawn(init_state_id: int) -> bool:
    return init_state_id >= FIXED_INIT_STATES


def layout_seed(benchmark_seed: int, suite: str, task_id: int, init_state_id: int) -> int:
    """The 32-bit seed of numpy's global generator that draws layout ``init_state_id`` of a task."""
    entropy = [_LAYOUT_SALT, benchmark_seed, zlib.crc32(suite.encode()), task_id, init_state_id]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def draw_layout(sim: Any, seed: int, what: str) -> np.ndarray:
    """Reset LIBERO's simulator ``sim`` (an ``OffScreenRenderEnv``) with its placement samplers seeded
    by ``seed``; the placed scene's flattened state. ``what`` names the layout in the error.

    LIBERO's own ``reset`` retries forever when its sampler gives up; here that is an error."""
    from robosuite.utils.errors import RandomizationError

    state = np.random.get_state()  # the global generator is LIBERO's; leave it as it was
    np.random.seed(seed)
    try:
        sim.env.reset()
    except RandomizationError as err:
        raise CfgrlError(f"LIBERO cannot place the objects of {what}: its placement sampler gave up ({err}); "
                         "choose another init state id or env.benchmark_seed") from None
    finally:
        np.random.set_state(state)
    return np.asarray(sim.get_sim_state(), np.float64)
