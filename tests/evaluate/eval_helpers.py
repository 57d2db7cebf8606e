"""Shared by the evaluate tests: a real tiny PI0 checkpoint and the settings of the end-to-end runs."""

from __future__ import annotations

from pathlib import Path

import torch

from cfgrl.policy import NormStats, PI0Config, PI0Policy


def save_tiny_policy(path: Path, condition_trained: bool) -> Path:
    torch.manual_seed(0)
    config = PI0Config.from_preset("tiny", image_size=32, patch_size=8, max_token_len=32, num_steps=2)
    policy = PI0Policy(config, stats=NormStats.identity(config.state_dim, config.action_dim))  # evaluate refuses none
    if condition_trained:  # give the condition real weight, so w changes the sampled actions
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in policy.model.condition.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 3.0)
        policy.condition_trained = True
    return policy.save_pretrained(path)


# The end-to-end evaluation every e2e test shares: 2 tasks x 1 test and 1 validation init state, 2 w.
SETTINGS = [
    "env.image_size=32", "env.max_steps=5", "env.tasks=[0, 1]", "env.init_states=[4]",
    "evaluate.validation_init_states=[5]", "evaluate.cfg_scales=[1, 2]", "collect.workers=1", "inference.num_steps=2",
]
WS = [1.0, 2.0]
