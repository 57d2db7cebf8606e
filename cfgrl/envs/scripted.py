"""A scripted expert for the built-in ``reach`` suite, with one noise knob.

It plans a whole action chunk (like the policy, which predicts H=50 actions and executes
``replan_steps`` of them) by rolling the environment's own dynamics forward from the privileged
state: head for the ball, brake, close the gripper on it, hold.

``noise`` in [0, 1] sets how good the demonstrations are, in three ways a learner can tell apart:
- with probability ``noise`` per episode the expert goes for a wrong ball (it grasps and holds that
  one: a failure a policy can learn to avoid, and what optimality labels single out);
- with probability ``noise`` per episode it fumbles once: it closes the gripper too early, over empty
  table, then opens it and carries on (slower, still fine). Without such episodes no demonstration
  ever shows what to do with a gripper closed on nothing, and a cloned policy that closes too early
  (measured: the commonest failure of the tiny policy) stays stuck with a closed gripper;
- the movement actions get Gaussian jitter of std ``JITTER * noise`` (slower, messier, still fine).
So the success rate of the expert is close to ``1 - noise``.
"""

from __future__ import annotations

import numpy as np

from cfgrl.envs.builtin import CLOSED, MAX_SPEED, SimState, advance
from cfgrl.errors import CfgrlError

JITTER = 0.5
CHUNK = 50  # the policy's chunk length H
APPROACH_GAIN = 0.6  # commanded velocity = gain * remaining offset, capped at MAX_SPEED
CLOSE_DISTANCE = 0.07  # start closing the gripper when this near the ball's centre
FUMBLE_DISTANCES = (0.4, 0.9)  # a fumble closes the gripper this far from the ball (uniform)
OPEN, CLOSE = -1.0, 1.0  # gripper action convention: -1 opens, +1 closes


def policy_id(noise: float) -> str:
    return f"scripted-noise{noise:.2f}"


def parse_noise(text: str) -> float:
    """The NOISE of ``--policy scripted:NOISE``."""
    try:
        noise = float(text)
    except ValueError:
        noise = float("nan")
    if not 0.0 <= noise <= 1.0:
        raise CfgrlError(f"scripted policy noise '{text}' is not valid; give a number in [0, 1] as in scripted:0.3")
    return noise


def chosen_ball(target: int, num_balls: int, noise: float, draw: float) -> int:
    """The ball this episode's expert goes for: the named one, or with probability ``noise`` another."""
    if draw >= noise:
        return target
    offset = 1 + int(draw / noise * (num_balls - 1))  # draw < noise: spread uniformly over the others
    return (target + min(offset, num_balls - 1)) % num_balls


def fumble_distance(noise: float, draw: float) -> float | None:
    """How far from its ball this episode's expert fumbles (closes early), or None if it does not.

    ``draw`` is uniform in [0, 1) and independent of the wrong-ball draw."""
    if draw >= noise:
        return None
    low, high = FUMBLE_DISTANCES
    return low + (high - low) * draw / noise


def _expert_action(sim: SimState, goal: int, fumble_at: float | None) -> np.ndarray:
    action = np.zeros(7)
    if fumble_at is not None and sim.held < 0 and np.linalg.norm(sim.balls[goal] - sim.pos) < fumble_at:
        action[6] = CLOSE  # the fumble: close over empty table (keep moving), reopen once closed
        action[:2] = _approach(sim, goal)
        return action
    if sim.held == goal:
        action[6] = CLOSE  # hold still, keep the grip
        return action
    offset = sim.balls[goal] - sim.pos
    dist = float(np.linalg.norm(offset))
    if sim.held >= 0 or sim.grip >= CLOSED:
        action[6] = OPEN  # wrong ball in hand, or closed on nothing: open before grasping again
    elif dist < CLOSE_DISTANCE:
        action[6] = CLOSE
        return action  # zero velocity command: brake while the gripper closes
    else:
        action[6] = OPEN
    action[:2] = _approach(sim, goal)
    return action


def _approach(sim: SimState, goal: int) -> np.ndarray:
    """The velocity command (in action units) towards the goal ball, slowing down near it."""
    command = APPROACH_GAIN * (sim.balls[goal] - sim.pos)
    speed = float(np.linalg.norm(command))
    if speed > MAX_SPEED:
        command *= MAX_SPEED / speed
    return command / MAX_SPEED


def expert_chunk(sim: SimState, noise: float, draw: float, rng: np.random.Generator, horizon: int,
                 fumble_at: float | None = None) -> np.ndarray:
    """``horizon`` actions planned open-loop from ``sim`` (noise-free imagined dynamics).

    ``fumble_at``: the distance at which the expert still has to fumble (None once it has)."""
    goal = chosen_ball(sim.target, len(sim.balls), noise, draw)
    chunk = np.zeros((horizon, 7), np.float32)
    imagined = sim
    for i in range(horizon):
        action = _expert_action(imagined, goal, fumble_at)
        imagined = advance(imagined, action, np.zeros(2))
        if imagined.grip >= CLOSED:
            fumble_at = None  # closed once: the fumble is over (the expert now opens again)
        chunk[i] = action
    # Jitter is drawn for a whole chunk whatever the horizon, so the episode's random stream (and the
    # episode) does not depend on how much of each chunk is planned.
    jitter = rng.normal(0.0, JITTER * noise, size=(max(horizon, CHUNK), 2))
    chunk[:, :2] += jitter[:horizon]
    return np.clip(chunk, -1.0, 1.0)
