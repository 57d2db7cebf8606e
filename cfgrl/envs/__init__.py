"""Environment backends behind one interface (``cfgrl.envs.base.Env``)."""

from __future__ import annotations

from cfgrl.config import EnvConfig
from cfgrl.envs.base import ACTION_DIM, STATE_DIM, Env, Observation, StepResult, TaskInfo

__all__ = ["ACTION_DIM", "STATE_DIM", "Env", "Observation", "StepResult", "TaskInfo", "make_env"]


def make_env(cfg: EnvConfig) -> Env:
    """Build one environment instance; LIBERO is imported only when asked for."""
    if cfg.name == "builtin":
        from cfgrl.envs.builtin import BuiltinEnv

        return BuiltinEnv(cfg)
    if cfg.name == "libero":
        from cfgrl.envs.libero import LiberoEnv

        return LiberoEnv(cfg)
    from cfgrl.errors import CfgrlError

    raise CfgrlError(f"env.name '{cfg.name}' is not valid; choose one of: builtin, libero")
