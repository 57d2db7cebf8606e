"""The value network: a distribution over 201 bins on [-1, 0], trained with the HL-Gauss loss.

Backbone: a small CNN over every camera's image (stacked on the channel axis, resized to
``value.image_size``), an MLP over the robot state, a learned embedding of the task and the elapsed
share of the episode's budget, joined by an MLP. Why not PI0's prefix stack: the value has to be
trained twice (cross-fitting) on every frame of the stores, on the machine that labels them, a GPU
or not; this reads the same observation (images, state, task) at a small fraction of the cost, and
needs no policy checkpoint. The elapsed share is an input because the value of a
time-limited task depends on the time left before the limit, which the images do not show.

Loss: HL-Gauss (Imani & White 2018; Farebrother et al. 2024, "Stop Regressing"): the target return y
becomes the mass a Gaussian N(y, sigma^2), sigma = 0.75 bin widths, puts on each bin, and the head is
trained by cross-entropy on it. Chosen over two-hot because it spreads each target over neighbouring
bins, which regularises a value learned from noisy Monte-Carlo returns of few episodes; Farebrother
et al. found it better than two-hot across tasks. V is the expectation of the predicted distribution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BINS = 201
LOW, HIGH = -1.0, 0.0
SIGMA_BINS = 0.75  # Farebrother et al.'s recommended sigma / bin width


def bin_centers() -> torch.Tensor:
    return torch.linspace(LOW, HIGH, BINS)


def hl_gauss(target: torch.Tensor) -> torch.Tensor:
    """(B,) returns in [-1, 0] -> (B, BINS) probabilities: a Gaussian's mass on each bin, renormalised
    over the support."""
    width = (HIGH - LOW) / (BINS - 1)
    edges = torch.linspace(LOW - width / 2, HIGH + width / 2, BINS + 1, device=target.device)
    cdf = torch.special.erf((edges[None, :] - target[:, None]) / (SIGMA_BINS * width * math.sqrt(2.0)))
    mass = cdf[:, 1:] - cdf[:, :-1]
    return mass / mass.sum(dim=1, keepdim=True)


def expected_value(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1) @ bin_centers().to(logits.device)


def hl_gauss_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(hl_gauss(target) * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


class ValueNet(nn.Module):
    def __init__(self, cameras: int, image_size: int, state_dim: int, num_tasks: int, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = 3 * cameras, image_size
        while size > 4:  # strided from the first layer down to about 4 x 4 pixels: a full-resolution layer would cost most
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU()]
            channels, size = width, (size + 1) // 2
        if not layers:  # tiny images: one layer at their resolution
            layers, channels = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()], width
        self.cnn = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.state = nn.Sequential(nn.Linear(state_dim, width), nn.ReLU())
        self.task = nn.Embedding(num_tasks, width)
        self.head = nn.Sequential(nn.Linear(channels + 2 * width + 1, 4 * width), nn.ReLU(), nn.Linear(4 * width, BINS))
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))

    def forward(self, images: torch.Tensor, state: torch.Tensor, task: torch.Tensor, elapsed: torch.Tensor) -> torch.Tensor:
        """images uint8 (B, 3 * cameras, S, S), state (B, D), task (B,) index, elapsed (B,) -> (B, BINS) logits."""
        pixels = images.float() / 127.5 - 1.0
        state = (state - self.state_mean) / self.state_std
        features = [self.cnn(pixels), self.state(state), self.task(task), elapsed[:, None]]
        return self.head(torch.cat(features, dim=-1))
