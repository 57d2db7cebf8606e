"""PI0Model: PI0's suffix (state token, action-time MLP) on the shared flow model (model.py).

Suffix: [condition token], the state token ``state_proj(state)``, then one token per action step,
``action_time_mlp_out(silu(action_time_mlp_in([action_in_proj(x_t), time embedding])))``. The state
and action tokens form two blocks: the state sees itself, the actions see the state and each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cfgrl.policy.condition import Condition, any_conditioned
from cfgrl.policy.config import PI0Config
from cfgrl.policy.model import FlowModel, Suffix, sinusoidal_time_embedding


class PI0Model(FlowModel):
    def __init__(self, cfg: PI0Config) -> None:
        super().__init__(cfg)  # the config and the joint transformer, first: fresh weights keep their seeded order
        width = cfg.expert_width
        self.state_proj = nn.Linear(cfg.max_state_dim, width)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, width)
        self.action_time_mlp_in = nn.Linear(2 * width, width)
        self.action_time_mlp_out = nn.Linear(width, width)
        self.action_out_proj = nn.Linear(width, cfg.max_action_dim)
        self.condition = Condition(cfg)

    def embed_suffix(self, state, noisy_actions, time, o) -> Suffix:
        """[condition token], state token, action tokens; ∅ rows get no condition machinery at all
        (an all-∅ batch is exactly the plain PI0's suffix)."""
        batch, horizon = noisy_actions.shape[:2]
        dtype = self.action_in_proj.weight.dtype
        state_token = self.state_proj(state.to(dtype))[:, None]
        time_embedding = sinusoidal_time_embedding(time, self.config.expert_width).to(dtype)
        action_embedding = self.action_in_proj(noisy_actions.to(dtype))
        mixed = self.action_time_mlp_in(torch.cat([action_embedding, time_embedding[:, None].expand_as(action_embedding)], 2))
        mode = self.config.condition_mode if any_conditioned(o) else None
        if mode == "concat":
            mixed = self.condition.add_concat(mixed, o)
        action_tokens = self.action_time_mlp_out(F.silu(mixed))
        if mode == "bias":
            action_tokens = self.condition.add_bias(action_tokens, o)

        device = noisy_actions.device
        ones = lambda n: torch.ones(batch, n, dtype=torch.bool, device=device)  # noqa: E731
        action_flags = torch.zeros(batch, horizon, dtype=torch.bool, device=device)
        action_flags[:, 0] = True  # actions form one block after the state's block
        if mode == "token":
            token, token_pad = self.condition.token(o, dtype)
            tokens = torch.cat([token, state_token, action_tokens], 1)
            pad = torch.cat([token_pad, ones(1 + horizon)], 1)
            # the token opens the state's block, so state and actions see it and the prefix never does
            flags = torch.cat([ones(1), ~ones(1), action_flags], 1)
        else:
            tokens = torch.cat([state_token, action_tokens], 1)
            pad = ones(1 + horizon)
            flags = torch.cat([ones(1), action_flags], 1)
        return Suffix(tokens, pad, flags, None)
