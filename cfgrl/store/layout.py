"""What a store holds, shared by its reader and its writer: the per-step arrays and the episode
columns with their dtypes, the layout every episode of one store agrees on (``StoreLayout``), one
finished episode as the writer takes it (``EpisodeData``), and which frame rows each episode owns
(``episode_frames``). The on-disk layout itself is drawn in the docstring of ``cfgrl.store``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

STEP_ARRAYS = {"state": "float32", "action": "float32", "reward": "float32", "done": "bool", "is_wait": "bool"}
EPISODE_COLUMNS = {
    "step_start": "int64",
    "length": "int64",
    "frame_start": "int64",
    "frame_count": "int64",
    "num_wait_steps": "int32",
    "task_id": "int32",
    "init_state_id": "int32",
    "group_id": "int64",
    "rollout_index": "int32",
    "seed": "int64",
    "success": "bool",
    "cfg_scale": "float32",
    "env": "str",
    "suite": "str",
    "prompt": "str",
    "policy_id": "str",
    "run_id": "str",
    "renderer": "str",
    "init_config": "str",  # JSON list: what the init state id stands for where the id alone does not fix it (Meta-World's configuration vector), else []
}
OFFSET_COLUMNS = ("step_start", "length", "frame_start", "frame_count")


@dataclass(frozen=True)
class StoreLayout:
    """What must agree between every episode of one store."""

    camera_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, 3)
    state_dim: int
    action_dim: int

    def to_attrs(self) -> dict[str, Any]:
        return {
            "camera_names": list(self.camera_names),
            "image_shape": list(self.image_shape),
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "StoreLayout":
        return cls(tuple(attrs["camera_names"]), tuple(attrs["image_shape"]), attrs["state_dim"], attrs["action_dim"])


@dataclass
class EpisodeData:
    """One finished episode as the collector hands it to the writer.

    ``meta`` holds every non-offset episode column (task_id, prompt, seed, success, ...).
    """

    state: np.ndarray  # (T, state_dim)
    action: np.ndarray  # (T, action_dim)
    reward: np.ndarray  # (T,)
    done: np.ndarray  # (T,)
    is_wait: np.ndarray  # (T,)
    frames: dict[str, np.ndarray]  # camera -> (F, H, W, 3) uint8
    frame_step: np.ndarray  # (F,) step index of each frame within the episode
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(len(self.action))



def episode_frames(frame_start: np.ndarray, frame_count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(episode, row in frames/*) of every stored frame, episode by episode in step order: episode
    ``e`` owns rows ``frame_start[e] .. frame_start[e] + frame_count[e] - 1``. Index arithmetic over the
    episode table; no frame is read."""
    count = np.asarray(frame_count, np.int64)
    episode = np.repeat(np.arange(len(count), dtype=np.int64), count)
    first_of_episode = np.cumsum(count) - count  # position of each episode's first frame in the result
    return episode, np.arange(len(episode), dtype=np.int64) + np.repeat(np.asarray(frame_start, np.int64) - first_of_episode, count)

