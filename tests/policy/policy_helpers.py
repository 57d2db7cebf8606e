"""Small real PI0 and π0.5 policies and batches for the policy tests (tiny presets at 32x32 images)."""

from __future__ import annotations

import numpy as np
import torch

from cfgrl.policy import NormStats, PI0Config, PI0Policy

CAMERAS = ("agentview", "wrist")


FAMILIES = ["pi0", "pi05"]


def make_config(family: str = "pi0", **overrides) -> PI0Config:
    """The tiny preset of ``family``; PI0's prompts fit 32 byte tokens, π0.5's (with the state) its preset's 128."""
    values = dict(image_size=32, patch_size=8, camera_names=CAMERAS, state_dim=8, action_dim=7)
    if family == "pi0":
        return PI0Config.from_preset("tiny", **{**values, "max_token_len": 32, **overrides})
    return PI0Config.from_preset("pi05_tiny", **{**values, **overrides})


def make_stats(seed: int = 0) -> NormStats:
    rng = np.random.default_rng(seed)
    return NormStats(rng.normal(size=8), rng.uniform(0.5, 2, size=8), rng.normal(size=7), rng.uniform(0.5, 2, size=7))


def make_policy(seed: int = 0, family: str = "pi0", **overrides) -> PI0Policy:
    torch.manual_seed(seed)
    return PI0Policy(make_config(family, **overrides), stats=make_stats(seed)).eval()


def make_obs(batch: int = 3, seed: int = 0, size: tuple[int, int] = (40, 30)) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = {cam: torch.randint(0, 256, (batch, *size, 3), generator=g, dtype=torch.uint8) for cam in CAMERAS}
    prompts = ["pick up the bowl", "open the drawer", "put the cup on the plate", "stack blocks"]
    return {"images": images, "state": torch.randn(batch, 8, generator=g), "prompt": [prompts[i % 4] for i in range(batch)]}


def make_batch(batch: int = 3, seed: int = 0, o=None) -> dict:
    """A training batch; with labels ``o`` (a list of Label values) it has "o", else none (for plain=True)."""
    g = torch.Generator().manual_seed(seed + 1)
    is_pad = torch.zeros(batch, 50, dtype=torch.bool)
    is_pad[0, 40:] = True
    labels = {} if o is None else {"o": torch.tensor([int(label) for label in o])}
    return {**make_obs(batch, seed), "actions": torch.randn(batch, 50, 7, generator=g), "action_is_pad": is_pad, **labels}


def make_noise(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 50, 32, generator=torch.Generator().manual_seed(seed + 7))


def perturb_condition(policy: PI0Policy, seed: int = 5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.model.condition.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 3.0)


# ----- the lerobot reference fixtures (tests/fixtures/lerobot_pi0, lerobot_pi05) -----
def max_relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())


def fixture_sizes(arch: dict) -> dict:
    vision, prefix, expert = arch["vision"], arch["prefix"], arch["expert"]
    assert prefix["head_dim"] == expert["head_dim"] and prefix["heads"] == expert["heads"]
    return dict(
        image_size=vision["image_size"], patch_size=vision["patch"], vision_width=vision["hidden"],
        vision_layers=vision["layers"], vision_heads=vision["heads"], vision_mlp=vision["mlp"],
        num_layers=prefix["depth"], num_heads=prefix["heads"], num_kv_heads=prefix["kv_heads"],
        head_dim=prefix["head_dim"], prefix_width=prefix["width"], prefix_mlp=prefix["mlp"], vocab_size=prefix["vocab"],
        expert_width=expert["width"], expert_mlp=expert["mlp"], rms_norm_eps=prefix["rms_norm_eps"],
        rope_theta=prefix["rope_theta"],
    )


def train_sentencepiece(directory) -> str:
    """A tiny real SentencePiece model (PaliGemma's special ids) trained on a few robot prompts."""
    import sentencepiece

    words = "pick up the black bowl and place it on the plate open the top drawer put the cup in the basket".split()
    lines = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 4), model_prefix=str(directory / "sp"), vocab_size=60, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, minloglevel=2,
    )
    return str(directory / "sp.model")


def count_sampling_passes(policy: PI0Policy, cfg_scale: float, batch: int = 3) -> dict:
    """Sample once and count what ran: image encodings, and the batch size of every prefix pass and
    of every suffix pass (one per Euler step)."""
    calls = {"images": 0, "prefix": [], "suffix": []}
    transformer = policy.model.transformer
    embed_images, forward = transformer.embed_images, transformer.forward

    def count_images(pixels):
        calls["images"] += 1
        return embed_images(pixels)

    def count_passes(prefix, suffix, *args, **kwargs):
        calls["prefix" if prefix is not None else "suffix"].append((prefix if prefix is not None else suffix).shape[0])
        return forward(prefix, suffix, *args, **kwargs)

    transformer.embed_images, transformer.forward = count_images, count_passes
    try:
        policy.sample_actions(make_obs(batch), cfg_scale=cfg_scale, noise=make_noise(batch))
    finally:
        transformer.embed_images, transformer.forward = embed_images, forward
    return calls
