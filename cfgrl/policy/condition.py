"""The CFGRL optimality condition o in the action expert's suffix.

Labels are ``cfgrl.optimality.Label``: 1 = optimal, 0 = not optimal, -1 = ∅. Only the two real
classes own parameters; a ∅ sample injects nothing, so its suffix is exactly the model without any
condition machinery whatever values these parameters hold. How a real class enters (condition_mode),
in PI0 / in π0.5:

* token:  a learned token opening the state's attention block (PI0) / the action block (π0.5): the
          prefix never sees it, the suffix tokens after it do. For ∅ samples it is padding.
* bias:   a learned vector added to every action token (zero-initialised).
* concat: a learned vector concatenated to the input of ``action_time_mlp_in`` (PI0: [action, time]) /
          ``action_in_proj`` (π0.5: x_t); the extra input columns (kept here as ``concat_columns``,
          zero-initialised) are a linear map, so ``layer([x, e]) = layer(x) + concat_columns(e)`` and ∅
          samples skip the sum.
* text:   no parameters and no suffix change: the label is text in the prompt (tokenizer.ADVANTAGE_TEXT),
          written by the policy per sample; ∅ is the plain prompt. The condition is then in the prefix, so
          guided sampling runs two prefixes (model.FlowModel._prefix_cache).

In bias and concat modes one class is a constant added to one layer's output, so that class alone
folds into the layer's bias (``folded_shift``: how ``cfgrl export --lerobot`` writes the w = 1 policy).
"""

from __future__ import annotations

import torch
from torch import nn

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from cfgrl.policy.config import NUM_CONDITION_CLASSES, PI0Config
from cfgrl.policy.tokenizer import ADVANTAGE_TEXT

ACCEPTED = "1 (optimal), 0 (not optimal) and -1 (∅)"


def check_labels(o: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    """Validate an optimality-label tensor: one ``Label`` per sample; labels are required."""
    if o is None:
        raise CfgrlError(f"condition labels o are required, one per sample: {ACCEPTED}; the base PI0 without condition machinery is plain=True")
    o = torch.as_tensor(o)
    if o.dtype.is_floating_point or o.dtype == torch.bool or o.shape != (batch_size,):
        raise CfgrlError(f"condition labels o must be an integer tensor of shape ({batch_size},), got {tuple(o.shape)} {o.dtype}")
    if not bool(torch.isin(o, torch.tensor([int(label) for label in Label], device=o.device)).all()):
        raise CfgrlError(f"condition labels o accept only {ACCEPTED}")
    return o.long()


def any_conditioned(o: torch.Tensor) -> bool:
    return bool((o != Label.NULL).any())


class Condition(nn.Module):
    def __init__(self, cfg: PI0Config) -> None:
        super().__init__()
        self.mode = cfg.condition_mode
        self.family = cfg.family
        width = cfg.expert_width
        if self.mode == "token":
            self.tokens = nn.Parameter(torch.randn(NUM_CONDITION_CLASSES, width) * 0.02)
        elif self.mode == "bias":
            self.biases = nn.Parameter(torch.zeros(NUM_CONDITION_CLASSES, width))
        elif self.mode == "concat":
            # The class vectors must start non-zero: with zero columns *and* zero vectors neither would
            # ever receive a gradient.
            self.vectors = nn.Parameter(torch.randn(NUM_CONDITION_CLASSES, width) / width**0.5)
            self.concat_columns = nn.Linear(width, width, bias=False)
            nn.init.zeros_(self.concat_columns.weight)
        elif self.mode != "text":  # text mode's condition is in the prompt: nothing to learn here
            raise CfgrlError(f"unknown condition_mode {self.mode!r}; accepted: token, bias, concat, text")

    @staticmethod
    def active(o: torch.Tensor) -> torch.Tensor:
        return o != Label.NULL

    @staticmethod
    def _class_index(o: torch.Tensor) -> torch.Tensor:
        return o.clamp(min=0)  # a class's index is its label; ∅ rows read class 0 but never use it

    def token(self, o: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """token mode: (B, 1, W) condition tokens and their (B, 1) pad mask (False for ∅)."""
        return self.tokens[self._class_index(o)][:, None].to(dtype), self.active(o)[:, None]

    def add_bias(self, action_tokens: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """bias mode: action tokens + the class vector, untouched for ∅ rows."""
        biased = action_tokens + self.biases[self._class_index(o)][:, None].to(action_tokens.dtype)
        return torch.where(self.active(o)[:, None, None], biased, action_tokens)

    def add_concat(self, mlp_in_out: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """concat mode: add the extra input columns' contribution, untouched for ∅ rows."""
        extra = self.concat_columns(self.vectors[self._class_index(o)].to(mlp_in_out.dtype))
        return torch.where(self.active(o)[:, None, None], mlp_in_out + extra[:, None], mlp_in_out)

    def folded_shift(self, label: Label) -> tuple[str, torch.Tensor]:
        """(layer, vector): ``label``'s condition as a constant added to that layer's output, so adding
        the vector to the layer's bias gives the policy conditioned on ``label`` without any condition
        machinery. token mode has no such form: its token is a place in the attention sequence."""
        pi05 = self.family == "pi05"  # π0.5's action tokens are action_in_proj's output: both modes land there
        if self.mode == "bias":
            return ("action_in_proj" if pi05 else "action_time_mlp_out"), self.biases[int(label)]
        if self.mode == "concat":
            return ("action_in_proj" if pi05 else "action_time_mlp_in"), self.concat_columns(self.vectors[int(label)])
        if self.mode == "text":
            raise CfgrlError(
                f"a text-mode condition cannot be folded into {self.family}'s weights (it is the prompt's advantage line); "
                f"run the plain weights in lerobot with '{ADVANTAGE_TEXT[1]}' added to every prompt as cfgrl writes it "
                f"(README, condition modes), or train with policy.condition_mode=bias or concat to export"
            )
        raise CfgrlError(
            f"a token-mode condition cannot be folded into {self.family}'s weights (its token is a place in the attention "
            f"sequence, which lerobot's {self.family} does not have); train with policy.condition_mode=bias or concat to export"
        )
