"""Where the actions come from: a PI0 checkpoint, a fresh random PI0, or the scripted expert.

``--policy DIR`` loads a checkpoint, ``--policy scripted:NOISE`` uses the env's scripted expert (the
builtin env's, LIBERO's pick-and-place expert, or Meta-World's own per-task experts; their chunks need the privileged state, so the
workers compute them), and no policy at all
means a fresh ``policy.preset`` PI0 with random weights: it runs the whole pipeline but cannot
solve anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from cfgrl.config import Config, camera_renames
from cfgrl.envs import ACTION_DIM, STATE_DIM, Observation
from cfgrl.envs.scripted import parse_noise, policy_id
from cfgrl.errors import CfgrlError

SCRIPTED_PREFIX = "scripted:"
SCRIPTED_ENVS = ("builtin", "libero", "metaworld")  # the envs with a ``scripted_chunk``
_FLOW_NOISE_SALT = 0x0F10  # keeps the flow-noise stream apart from the env's use of the same seed


class ChunkPolicy(Protocol):
    """What the engine needs from a PI0 policy (``cfgrl.policy.PI0Policy``)."""

    policy_id: str
    config: Any  # PI0Config: chunk_size, max_action_dim

    def sample_actions(self, obs: dict[str, Any], cfg_scale: float, noise: Any, num_steps: int | None) -> Any: ...


@dataclass(frozen=True)
class ScriptedExpert:
    """The env's scripted expert; ``noise`` 0 is the expert itself (builtin: ``cfgrl.envs.scripted``;
    LIBERO: ``cfgrl.envs.libero_expert``, going for a wrong object with probability ``noise``; Meta-World: its per-task experts aiming at a wrong place with probability ``noise``, with jitter)."""

    noise: float

    @property
    def policy_id(self) -> str:
        return policy_id(self.noise)


def load_policy(source: str | None, cfg: Config, camera_names: tuple[str, ...], image_size: int,
                say: Callable[[str], None] = print, prompts: Sequence[str] = ()) -> ScriptedExpert | ChunkPolicy:
    """Resolve ``--policy`` (or ``policy.path``; none = a fresh preset) into a policy object that can
    tell the env's task ``prompts`` apart."""
    source = source if source is not None else cfg.policy.path
    if source is not None and source.startswith(SCRIPTED_PREFIX):
        if cfg.env.name not in SCRIPTED_ENVS:
            raise CfgrlError(f"--policy {source}: scripted experts exist for env.name {', '.join(SCRIPTED_ENVS)} only, not {cfg.env.name}")
        return ScriptedExpert(parse_noise(source[len(SCRIPTED_PREFIX):]))
    if source is not None:
        path = Path(source)
        if not path.is_dir():
            raise CfgrlError(
                f"policy '{source}' is not a directory; give a checkpoint directory, scripted:NOISE, or no --policy"
            )
        import torch

        from cfgrl.policy import PI0Policy
        from cfgrl.policy.policy import dtype_named

        dtype = dtype_named(cfg.policy.dtype, "policy.dtype", auto=True)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        policy = PI0Policy.from_pretrained(path, tokenizer=cfg.policy.tokenizer, dtype=dtype).to(device)
        for note in policy.load_report:
            say(f"policy '{source}': {note}")
        policy.rename_cameras(camera_renames(cfg.policy.camera_map))
        _check_fits_env(policy, source, camera_names)
        _check_chunk(policy, source, cfg.inference.replan_steps)
        if policy.stats is None:
            raise no_stats_error("policy", source)
        policy.require_distinct_prompts(list(prompts))
        return policy
    import torch

    from cfgrl.policy import PI0Config, PI0Policy

    say(f"note: no --policy given: using a fresh '{cfg.policy.preset}' PI0 with random weights; "
        "it exercises the pipeline but will not learn anything useful from these rollouts")
    torch.manual_seed(cfg.collect.seed)
    fresh = PI0Policy(PI0Config.fresh(  # shaped like the policy `cfgrl train` would start from
        cfg.policy, camera_names=tuple(camera_names), image_size=image_size, use_prefix_dropout=cfg.cfgrl.use_prefix_dropout,
    ))
    fresh.require_distinct_prompts(list(prompts))
    return fresh


def no_stats_error(what: str, source: str | Path) -> CfgrlError:
    """A loaded checkpoint without normalisation stats would act in unscaled units: refused."""
    return CfgrlError(f"{what} '{source}' carries no normalisation stats (no stats.json, or no lerobot normaliser stats); "
                      f"train it first (`cfgrl train --policy {source}` computes them from the stores, as "
                      "`--stats store` does) or give a checkpoint with stats")


def _check_fits_env(policy: ChunkPolicy, source: str, camera_names: tuple[str, ...]) -> None:
    """Refuse, before any rollout, a checkpoint that cannot read this env's observations."""
    pcfg = policy.config
    if (pcfg.state_dim, pcfg.action_dim) != (STATE_DIM, ACTION_DIM):
        raise CfgrlError(f"policy '{source}' uses state/action dims {pcfg.state_dim}/{pcfg.action_dim}; "
                         f"the environments have {STATE_DIM}/{ACTION_DIM}")
    unknown = sorted(set(camera_names) - set(pcfg.camera_names))
    if unknown:
        raise CfgrlError(f"policy '{source}' has no camera {', '.join(unknown)} (it reads {', '.join(pcfg.camera_names)}); "
                         "collect with an env that renders its cameras")


def _check_chunk(policy: ChunkPolicy, source: str, replan_steps: int) -> None:
    """Refuse a chunk shorter than the actions executed per query: a query would run out of actions."""
    if policy.config.chunk_size < replan_steps:
        raise CfgrlError(f"policy '{source}' predicts chunks of {policy.config.chunk_size} actions, fewer than "
                         f"inference.replan_steps={replan_steps}; set inference.replan_steps to at most {policy.config.chunk_size}")


def flow_noise_generator(episode_seed: int):
    """The episode's own stream of flow-matching noise: results do not depend on batching."""
    import torch

    return torch.Generator().manual_seed((episode_seed ^ _FLOW_NOISE_SALT) & 0x7FFF_FFFF_FFFF_FFFF)


def query_chunks(policy: ChunkPolicy, observations: list[Observation], generators: list, cfg_scale: float,
                 num_steps: int | None = None) -> np.ndarray:
    """One batched policy call for every waiting episode: (B, chunk, ACTION_DIM) raw actions."""
    import torch

    cams = observations[0].images.keys()
    horizon, width = policy.config.chunk_size, policy.config.max_action_dim
    noise = torch.stack([torch.randn(horizon, width, generator=g) for g in generators])
    batch = {
        "images": {c: torch.from_numpy(np.stack([o.images[c] for o in observations])) for c in cams},
        "state": torch.from_numpy(np.stack([o.state for o in observations])),
        "prompt": [o.prompt for o in observations],
    }
    with torch.inference_mode():
        actions = policy.sample_actions(batch, cfg_scale=cfg_scale, noise=noise, num_steps=num_steps)
    return np.asarray(actions.detach().cpu().numpy(), np.float32)
