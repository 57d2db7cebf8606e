"""A scripted expert for LIBERO's pick-and-place suites (``libero_spatial``, ``libero_object``).

It reads privileged poses from the simulator (the end effector's grip site, the object's and the
place's bodies) and sends robosuite's OSC_POSE delta actions through the phases approach -> descend
-> grasp -> lift -> carry -> lower -> release -> retreat. The task's goal (BDDL ``(On obj place)`` or
``(In obj region)``) names what to move where, so one expert serves every task of both suites.

A bowl (libero_spatial) is too wide for the Panda's 8 cm opening: it is pinched by its rim, the
fingers (which close along world y at LIBERO's reset orientation) straddling the wall at the point of
the rim on the bowl's y axis. Anything else (libero_object's boxes, bottles, cans) is grasped at its
centre from above, the fingers closing across its narrowest side (a butter or cream-cheese box is as
long as the open hand is wide).

``noise`` in [0, 1] (``--policy scripted:NOISE``), drawn once per episode at reset:
- with probability ``noise`` the expert goes for the wrong object (another object of the scene, the
  task's other bowl where there is one) and puts it where the right one should go: a failure a policy
  can see (the prompt names the other object) and learn to avoid;
- any ``noise`` > 0 adds Gaussian jitter of std ``JITTER`` to its translation commands, whose
  corrections are recovery data for a cloned policy.
So its success is about (1 - noise) x its noise-0 rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

JITTER = 0.15  # std of the translation jitter, in action units (1 = 0.05 m of OSC goal offset)
MOVE_PER_ACTION = 0.0128  # metres the grip site moves per step per unit action, at steady speed (measured)
GAIN = 0.6  # fraction of the remaining offset commanded per step: lower leaves the arm short of its target (OSC compliance)
ROT_GAIN = 0.5  # holds the reset orientation (OSC rotation actions: 1 = 0.5 rad)
HOVER = 0.10  # approach height above the grasp point
# Lowest height of the grip site while moving across the scene, above the robot's base (which stands at
# the table's height, or the floor's): over libero_spatial's cabinet (1.15 m there, as first tuned).
TRAVEL_ABOVE_BASE = 0.238
CARRY_CLEARANCE = 0.03  # a held object's bottom passes this far above the place's top (libero_object's basket rim)
LIFT = 0.15  # carry height of the grasp point above where it was grasped
PLACE_CLEARANCE = 0.02  # the object's bottom is released this far above the place's top
CLOSE_STEPS, RELEASE_STEPS = 14, 10  # the fingers close (or open) in ~10 steps (measured)
NEAR_XY, NEAR_Z = 0.004, 0.008  # a phase target counts as reached within these (metres); a rim needs the tighter xy
CARRY_NEAR = 0.01  # over the place, the hand need not be as exact as at the rim: lowering corrects the rest
STALLED, STALL_NEAR = 0.001, 0.015  # a descent that moves less than STALLED between judgements within STALL_NEAR grasps there
RIM_INSET = 0.0  # pinch the rim this far inside the middle of its wall
FINGER_REACH = 0.045  # the outer face of an open finger, this far from the grasp point (fingers at 0.04, ~1 cm thick)
FINGER_CLEARANCE = 0.005  # the scene must leave this much room around the fingers
NARROWER = 0.01  # a compact object is pinched across its narrowest side when that is this much narrower than the robot's
OPEN, CLOSE = -1.0, 1.0  # the gripper's action: -1 opens, +1 closes
PHASES = ("approach", "descend", "grasp", "lift", "carry", "lower", "release", "retreat")


@dataclass
class Plan:
    """What one episode's expert moves and where: body ids and the offsets fixed at reset."""

    obj_body: int
    place_body: int | None  # the place object's body, or None for a region site
    place_site: int | None
    grasp_offset: np.ndarray  # grasp point - object body position, at reset
    place_height: float  # object body height above the place's reference point when released
    phase: int = 0
    count: int = 0  # steps spent in a timed phase (grasp, release)
    held_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # grip site - object, once grasped
    grasp_z: float = 0.0
    travel_z: float = 0.0  # the grip site's lowest height crossing the scene, empty-handed
    carry_z: float = 0.0  # ... and holding the object over the place
    judged_eef: np.ndarray | None = None  # the grip site at the previous judgement of a descent


def goal_of(env: Any) -> tuple[str, str]:
    """(object, place) of the task's goal ``(On obj place)`` or ``(In obj region)``."""
    goals = env.parsed_problem["goal_state"]
    if len(goals) != 1 or goals[0][0].lower() not in ("on", "in"):
        raise ValueError(f"the LIBERO scripted expert moves one object onto or into a place; this task's goal is {goals}")
    _, obj, place = goals[0]
    return obj, place


def wrong_object(env: Any, obj: str, place: str, draw: float, noise: float) -> str:
    """The object this episode's expert goes for: ``obj``, or with probability ``noise`` another one,
    of the same kind where the scene has one (libero_spatial's other bowl)."""
    if draw >= noise:
        return obj
    others = [name for name in env.objects_dict if name not in (obj, place) and not place.startswith(name)]
    kind = obj.rsplit("_", 1)[0]
    same_kind = [name for name in others if name.rsplit("_", 1)[0] == kind]
    pool = same_kind or others
    return pool[min(int(draw / noise * len(pool)), len(pool) - 1)]


def _geoms_of(model: Any, body: int) -> np.ndarray:
    """The body's collision geoms (its visual meshes' boxes are looser, and nothing touches them)."""
    return np.flatnonzero((model.geom_bodyid == body) & ((model.geom_contype != 0) | (model.geom_conaffinity != 0)))


def geom_boxes(model: Any, data: Any, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-axis bounding boxes (lo, hi), each (G, 3), of ``geoms`` from MuJoCo's local AABBs."""
    centre_local, half_local = model.geom_aabb[geoms, :3], model.geom_aabb[geoms, 3:]
    rot = data.geom_xmat[geoms].reshape(-1, 3, 3)
    centre = data.geom_xpos[geoms] + np.einsum("gij,gj->gi", rot, centre_local)
    half = np.einsum("gij,gj->gi", np.abs(rot), half_local)
    return centre - half, centre + half


def narrowest_side(model: Any, data: Any, body: int, facing: np.ndarray) -> tuple[np.ndarray, float]:
    """(the horizontal unit vector across which ``body`` is narrowest, with its sign towards ``facing``;
    how much narrower it is there than along ``facing``), from its collision geoms' box corners."""
    geoms = _geoms_of(model, body)
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    rot = data.geom_xmat[geoms].reshape(-1, 3, 3)
    local = model.geom_aabb[geoms, None, :3] + signs[None] * model.geom_aabb[geoms, None, 3:]
    corners = (data.geom_xpos[geoms][:, None] + np.einsum("gij,gpj->gpi", rot, local)).reshape(-1, 3)[:, :2]
    angles = np.radians(np.arange(0.0, 180.0, 5.0))
    sides = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    widths = np.ptp(corners @ np.concatenate([sides, facing[None]]).T, axis=0)
    best = sides[np.argmin(widths[:-1])]
    return (best if best @ facing >= 0 else -best), float(widths[-1] - widths[:-1].min())


def grasp_offset(sim: Any, body: int, towards: np.ndarray) -> np.ndarray:
    """Grasp point - body position. A bowl (its top geoms a ring far from its axis) is pinched by the
    rim on its side facing ``towards`` (a unit xy vector: the robot, the shortest reach, and no
    reaching across the bowl); a compact object from above at its centre, a little below its top."""
    model, data = sim.model._model, sim.data._data
    geoms = _geoms_of(model, body)
    lo, hi = geom_boxes(model, data, geoms)
    centre, top = data.xpos[body], float(hi[:, 2].max())
    upper = hi[:, 2] > top - 0.01
    radius = np.linalg.norm((lo + hi)[upper, :2] / 2 - centre[:2], axis=1)
    if upper.sum() > 8 and radius.min() > 0.03:  # a rim
        rim = float(np.median(radius)) - RIM_INSET
        return np.array([*(rim * towards), top - centre[2] - 0.015])
    return np.array([0.0, 0.0, max(top - centre[2] - 0.03, 0.01)])


class LiberoExpert:
    """One episode's expert: ``chunk`` plans the next actions from the simulator's current state."""

    def __init__(self, env: Any, noise: float, draw: float, rng: np.random.Generator):
        self.env, self.noise, self.rng = env, noise, rng
        obj, place = goal_of(env)
        chosen = wrong_object(env, obj, place, draw, noise)
        sim = env.sim
        body = sim.model.body_name2id(env.objects_dict[chosen].root_body)
        place_body, place_site = self._place(place)
        towards = self._towards_robot(body)
        self.plan = Plan(body, place_body, place_site, grasp_offset(sim, body, towards), self._release_height(place_body, body))
        self.plan.travel_z, self.plan.carry_z = self._travel_heights(body)
        self.orientation = self._grasp_orientation(towards)  # turned to during the approach, then held

    def _towards_robot(self, body: int) -> np.ndarray:
        """The side of the object to grasp from: the one nearest the robot (a compact object's narrowest
        side, where it is clearly narrower) whose finger positions are clear of the scene (a bowl in a
        drawer is pinched where the drawer's wall leaves room)."""
        model, data = self.env.sim.model._model, self.env.sim.data._data
        direction = (self._robot_base() - data.xpos[body])[:2]
        direction /= np.linalg.norm(direction)
        if not grasp_offset(self.env.sim, body, direction)[:2].any():  # compact: across its narrowest side
            side, narrower = narrowest_side(model, data, body, direction)
            direction = side if narrower > NARROWER else direction
        start = np.arctan2(direction[1], direction[0])
        others = np.flatnonzero((model.geom_bodyid != body) & ((model.geom_contype != 0) | (model.geom_conaffinity != 0))
                                & ~np.isin(model.geom_bodyid, self._robot_bodies()))
        best, best_clearance = None, -np.inf
        for turn in np.radians([0, 30, -30, 60, -60, 90, -90, 120, -120, 150, -150, 180]):
            towards = np.array([np.cos(start + turn), np.sin(start + turn)])
            clearance = _clearance(data.xpos[body] + grasp_offset(self.env.sim, body, towards), towards, model, data, others)
            if clearance >= FINGER_CLEARANCE:
                return towards
            if clearance > best_clearance:
                best, best_clearance = towards, clearance
        return best

    def _robot_bodies(self) -> np.ndarray:
        model = self.env.sim.model._model
        names = [model.body(i).name for i in range(model.nbody)]
        return np.array([i for i, name in enumerate(names) if name.startswith(("robot0_", "gripper0_", "mount0_"))])

    def _grasp_orientation(self, towards: np.ndarray) -> np.ndarray:
        """The reset orientation turned about world z so that the fingers close along ``towards``
        (by the smaller of the two turns: the fingers are symmetric)."""
        data, model = self.env.sim.data._data, self.env.sim.model
        left, right = (data.xpos[model.body_name2id(f"gripper0_{side}finger")][:2] for side in ("left", "right"))
        axis = (right - left) / np.linalg.norm(right - left)
        angle = np.arctan2(axis[0] * towards[1] - axis[1] * towards[0], axis @ towards)
        angle = (angle + np.pi / 2) % np.pi - np.pi / 2  # the fingers are symmetric
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ self._eef_rotation()

    def _place(self, place: str) -> tuple[int | None, int | None]:
        sim = self.env.sim
        if place in self.env.objects_dict or place in self.env.fixtures_dict:
            entity = self.env.objects_dict.get(place) or self.env.fixtures_dict[place]
            return sim.model.body_name2id(entity.root_body), None
        return None, sim.model.site_name2id(place)  # a region of an object: its site

    def _release_height(self, place_body: int | None, body: int) -> float:
        """Object body height above the place's reference point at release: the place's top plus the
        object's depth below its body origin, plus a clearance."""
        model, data = self.env.sim.model._model, self.env.sim.data._data
        depth = float(data.xpos[body, 2] - geom_boxes(model, data, _geoms_of(model, body))[0][:, 2].min())
        if place_body is None:
            return depth + PLACE_CLEARANCE
        geoms = _geoms_of(model, place_body)
        top = geom_boxes(model, data, geoms)[1][:, 2].max() if len(geoms) else data.xpos[place_body, 2]
        return float(top - data.xpos[place_body, 2]) + depth + PLACE_CLEARANCE

    def _travel_heights(self, body: int) -> tuple[float, float]:
        """(empty-handed, holding the object) lowest heights of the grip site crossing the scene: above the
        robot's base by TRAVEL_ABOVE_BASE, and holding, high enough that the object's bottom clears the place."""
        model, data = self.env.sim.model._model, self.env.sim.data._data
        travel = float(self._robot_base()[2]) + TRAVEL_ABOVE_BASE
        hang = float(data.xpos[body, 2] + self.plan.grasp_offset[2] - geom_boxes(model, data, _geoms_of(model, body))[0][:, 2].min())
        place = self._place_point()
        if self.plan.place_body is not None and len(geoms := _geoms_of(model, self.plan.place_body)):
            place = geom_boxes(model, data, geoms)[1].max(axis=0)
        return travel, max(travel, float(place[2]) + hang + CARRY_CLEARANCE)

    def _robot_base(self) -> np.ndarray:
        return self.env.sim.data._data.xpos[self.env.sim.model.body_name2id(self.env.robots[0].robot_model.root_body)]

    def _eef(self) -> np.ndarray:
        return self.env.sim.data.site_xpos[self.env.robots[0].eef_site_id].copy()

    def _eef_rotation(self) -> np.ndarray:
        return self.env.sim.data.site_xmat[self.env.robots[0].eef_site_id].reshape(3, 3)

    def _place_point(self) -> np.ndarray:
        data = self.env.sim.data._data
        if self.plan.place_body is not None:
            return data.xpos[self.plan.place_body].copy()
        return data.site_xpos[self.plan.place_site].copy()

    def chunk(self, horizon: int) -> np.ndarray:
        """``horizon`` actions, each computed from the state the previous ones are expected to reach."""
        eef = self._eef()
        obj = self.env.sim.data._data.xpos[self.plan.obj_body].copy()
        rotation = self._rotation_action()
        actions = np.zeros((horizon, 7), np.float32)
        # Jitter for a whole 50-step chunk whatever the horizon, so an episode does not depend on it.
        jitter = self.rng.normal(0.0, JITTER if self.noise > 0 else 0.0, size=(max(horizon, 50), 3))
        for i in range(horizon):
            # Reaching a target is judged on the simulator's state (the chunk's first step) alone: the
            # arm lags its commands, so an expected position would end a phase too early.
            target, grip = self._step_target(eef, obj, judge=i == 0)
            move = np.clip(GAIN * (target - eef) / MOVE_PER_ACTION, -1.0, 1.0)
            actions[i, :3] = np.clip(move + jitter[i], -1.0, 1.0)
            actions[i, 3:6] = rotation
            actions[i, 6] = grip
            step = move * MOVE_PER_ACTION  # the expected motion, at steady speed
            eef = eef + step
            if self.plan.phase >= PHASES.index("lift") and self.plan.phase < PHASES.index("release"):
                obj = obj + step  # held: it moves with the hand
        return actions

    def _stalled(self, eef: np.ndarray, target: np.ndarray) -> bool:
        """Whether the descent has stopped close to its target: a finger resting on the rim or a drawer's
        wall holds the hand a few millimetres off, where closing still pinches the rim."""
        previous, self.plan.judged_eef = self.plan.judged_eef, eef.copy()
        return previous is not None and np.linalg.norm(eef - previous) < STALLED and np.linalg.norm(eef - target) < STALL_NEAR

    def _rotation_action(self) -> np.ndarray:
        """The rotation (world axis-angle) back to the reset orientation, in OSC action units."""
        error = self.orientation @ self._eef_rotation().T
        angle = np.arccos(np.clip((np.trace(error) - 1) / 2, -1.0, 1.0))
        if angle < 1e-6:
            return np.zeros(3)
        axis = np.array([error[2, 1] - error[1, 2], error[0, 2] - error[2, 0], error[1, 0] - error[0, 1]]) / (2 * np.sin(angle))
        return np.clip(ROT_GAIN * axis * angle / 0.5, -1.0, 1.0)

    def _step_target(self, eef: np.ndarray, obj: np.ndarray, judge: bool) -> tuple[np.ndarray, float]:
        """The grip site's target and the gripper command of the current phase; advances the phase."""
        p = self.plan
        name = PHASES[p.phase]
        if name in ("approach", "descend"):
            grasp = obj + p.grasp_offset
            target = grasp + (np.array([0, 0, HOVER]) if name == "approach" else 0.0)
            if name == "approach" and np.linalg.norm(target[:2] - eef[:2]) > 0.03:
                target[2] = max(target[2], p.travel_z)  # over the scene first, then down
            if judge and (_reached(eef, target) or (name == "descend" and self._stalled(eef, target))):
                p.phase += 1
            return target, OPEN
        if name == "grasp":
            p.count += 1
            if p.count >= CLOSE_STEPS:
                p.phase, p.count = p.phase + 1, 0
                p.held_offset, p.grasp_z = eef - obj, float(eef[2])
            return eef, CLOSE
        place = self._place_point()
        above = place + np.array([0.0, 0.0, p.place_height]) + p.held_offset
        if name == "lift":
            target = np.array([eef[0], eef[1], max(p.grasp_z + LIFT, p.carry_z)])
            if judge and abs(target[2] - eef[2]) < 0.02:
                p.phase += 1
            return target, CLOSE
        if name == "carry":
            target = np.array([above[0], above[1], max(p.grasp_z + LIFT, p.carry_z, above[2] + 0.05)])
            if judge and _reached(eef, target, xy=CARRY_NEAR, z=0.03):
                p.phase += 1
            return target, CLOSE
        if name == "lower":
            if judge and _reached(eef, above, xy=CARRY_NEAR):
                p.phase += 1
            return above, CLOSE
        if name == "release":
            p.count += 1
            if p.count >= RELEASE_STEPS:
                p.phase += 1
            return eef, OPEN
        return np.array([eef[0], eef[1], p.grasp_z + LIFT]), OPEN  # retreat: up, out of the way


def _clearance(grasp: np.ndarray, towards: np.ndarray, model: Any, data: Any, geoms: np.ndarray) -> float:
    """How far the two fingers (FINGER_REACH either side of ``grasp`` along ``towards``, from their tips
    up to the hand) stay from ``geoms``, each taken as its oriented bounding box."""
    side = np.array([*towards, 0.0]) * FINGER_REACH
    heights = np.array([[0, 0, -0.02], [0, 0, 0.02], [0, 0, 0.06]])
    points = np.concatenate([grasp + side + heights, grasp - side + heights])  # (P, 3)
    rot = data.geom_xmat[geoms].reshape(-1, 3, 3)
    local = np.einsum("gji,gpj->gpi", rot, points[None] - data.geom_xpos[geoms][:, None]) - model.geom_aabb[geoms, None, :3]
    gaps = np.maximum(np.abs(local) - model.geom_aabb[geoms, None, 3:], 0.0)
    return float(np.linalg.norm(gaps, axis=2).min())


def _reached(eef: np.ndarray, target: np.ndarray, xy: float = NEAR_XY, z: float = NEAR_Z) -> bool:
    return bool(np.linalg.norm(eef[:2] - target[:2]) < xy and abs(eef[2] - target[2]) < z)
