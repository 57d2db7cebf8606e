"""Environment backends behind one interface (``cfgrl.envs.base.Env``)."""

from __future__ import annotations

from typing import Any

from cfgrl.config import EnvConfig
from cfgrl.envs.base import ACTION_DIM, STATE_DIM, Env, Observation, StepResult, TaskInfo

__all__ = ["ACTION_DIM", "STATE_DIM", "Env", "Observation", "StepResult", "TaskInfo", "make_env", "max_policy_steps", "prepare_env"]


def prepare_env(cfg: EnvConfig) -> Any:
    """What one process builds once for every env instance of ``cfg`` (the rollout engine builds it
    in the main process and hands it to its workers): Meta-World's benchmark configurations, None
    for the other backends."""
    if cfg.name == "metaworld":
        from cfgrl.envs.metaworld import prepare

        return prepare(cfg)
    return None


def make_env(cfg: EnvConfig, prepared: Any = None) -> Env:
    """Build one environment instance; LIBERO and Meta-World are imported only when asked for.

    ``prepared``: what ``prepare_env(cfg)`` returned (None: the env builds it itself when it needs it)."""
    if cfg.name == "builtin":
        from cfgrl.envs.builtin import BuiltinEnv

        return BuiltinEnv(cfg)
    if cfg.name == "libero":
        from cfgrl.envs.libero import LiberoEnv

        return LiberoEnv(cfg)
    if cfg.name == "metaworld":
        from cfgrl.envs.metaworld import MetaWorldEnv

        return MetaWorldEnv(cfg, prepared)
    from cfgrl.errors import CfgrlError

    raise CfgrlError(f"env.name '{cfg.name}' is not valid; choose one of: builtin, libero, metaworld")

def max_policy_steps(cfg: EnvConfig, env_name: str, suite: str) -> int:
    """A task's maximum episode length in policy steps, as the backend sets it (``env.max_steps`` or the
    suite's default), without building the environment (a store's episodes record env and suite)."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    if env_name == "builtin":
        from cfgrl.envs.builtin import DEFAULT_MAX_STEPS

        return DEFAULT_MAX_STEPS
    if env_name == "metaworld":
        from cfgrl.envs.metaworld import DEFAULT_MAX_STEPS as METAWORLD_MAX_STEPS

        return METAWORLD_MAX_STEPS
    if env_name == "libero":
        from cfgrl.envs.libero import SUITE_MAX_STEPS

        if suite in SUITE_MAX_STEPS:
            return SUITE_MAX_STEPS[suite]
    from cfgrl.errors import CfgrlError

    raise CfgrlError(f"no default maximum episode length for env '{env_name}', suite '{suite}'; set env.max_steps")
