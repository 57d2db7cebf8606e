"""PI05Model: π0.5's suffix on the shared flow model (model.py).

No state token and no action-time MLP: the action tokens are ``action_in_proj(x_t)`` and the flow time
enters through the expert's adaptive RMSNorms, conditioned on
``swish(time_mlp_out(swish(time_mlp_in(time embedding))))``. The state, if the model sees it at all,
is text in the prompt (policy.py). All action tokens form one block after the prefix.

The CFGRL condition (∅ rows get none of it):
* token:  a learned token opening the action block (the actions see it, the prefix never does);
* bias:   a learned vector added to every action token;
* concat: extra zero-initialised input columns on ``action_in_proj``, fed a learned class vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cfgrl.policy.condition import Condition, any_conditioned
from cfgrl.policy.config import PI0Config
from cfgrl.policy.model import FlowModel, Suffix, sinusoidal_time_embedding


class PI05Model(FlowModel):
    def __init__(self, cfg: PI0Config) -> None:
        super().__init__(cfg)  # the config and the joint transformer, first: fresh weights keep their seeded order
        width = cfg.expert_width
        self.action_in_proj = nn.Linear(cfg.max_action_dim, width)
        self.time_mlp_in = nn.Linear(width, width)
        self.time_mlp_out = nn.Linear(width, width)
        self.action_out_proj = nn.Linear(width, cfg.max_action_dim)
        self.condition = Condition(cfg)

    def time_conditioning(self, time: torch.Tensor) -> torch.Tensor:
        """(B,) flow times -> (B, expert_width): what the expert's adaptive norms are conditioned on."""
        embedding = sinusoidal_time_embedding(time, self.config.expert_width).to(self.time_mlp_in.weight.dtype)
        return F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(embedding))))

    def embed_suffix(self, state, noisy_actions, time, o) -> Suffix:
        """[condition token], action tokens; ``state`` is None (π0.5 reads it from the prompt)."""
        if state is not None:
            raise ValueError("π0.5 takes no state tensor: the state is text in its prompt")
        batch, horizon = noisy_actions.shape[:2]
        action_tokens = self.action_in_proj(noisy_actions.to(self.action_in_proj.weight.dtype))
        mode = self.config.condition_mode if any_conditioned(o) else None
        if mode == "concat":
            action_tokens = self.condition.add_concat(action_tokens, o)
        elif mode == "bias":
            action_tokens = self.condition.add_bias(action_tokens, o)

        device = noisy_actions.device
        pad = torch.ones(batch, horizon, dtype=torch.bool, device=device)
        flags = torch.zeros(batch, horizon, dtype=torch.bool, device=device)
        flags[:, 0] = True  # the actions form one block after the prefix
        if mode == "token":
            token, token_pad = self.condition.token(o, action_tokens.dtype)
            # the token opens the action block: the actions see it, the prefix never does; a ∅ row's
            # token is padding, and its actions' block numbers are those of the plain suffix
            action_tokens = torch.cat([token, action_tokens], 1)
            pad = torch.cat([token_pad, pad], 1)
            flags = torch.cat([torch.ones_like(token_pad), torch.zeros_like(flags)], 1)
        return Suffix(action_tokens, pad, flags, self.time_conditioning(time))
