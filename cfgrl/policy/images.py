"""Camera images -> the vision tower's input: resize with padding, pixels in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cfgrl.errors import CfgrlError


def resize_with_pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) floats in [0, 1] -> (B, 3, size, size), aspect ratio kept, centred, black padding."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return F.pad(resized.clamp(0.0, 1.0), (left, size - new_w - left, top, size - new_h - top), value=0.0)


def prepare_images(
    images: dict[str, torch.Tensor], camera_names: tuple[str, ...], size: int, batch_size: int, device: torch.device
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """uint8 (B, H, W, 3) per camera -> per camera (B, 3, size, size) in [-1, 1] and a (B,) presence mask.

    A camera absent from ``images`` becomes an all -1 image with mask False (the model ignores it).
    """
    unknown = sorted(set(images) - set(camera_names))
    if unknown:
        raise CfgrlError(f"unknown camera(s) {', '.join(unknown)}; this policy uses {', '.join(camera_names)}")
    pixels, masks = [], []
    for name in camera_names:
        if name not in images:
            pixels.append(torch.full((batch_size, 3, size, size), -1.0, device=device))
            masks.append(torch.zeros(batch_size, dtype=torch.bool, device=device))
            continue
        image = torch.as_tensor(images[name], device=device)
        if image.dtype != torch.uint8 or image.ndim != 4 or image.shape[-1] != 3 or image.shape[0] != batch_size:
            raise CfgrlError(
                f"camera {name!r}: expected uint8 images of shape ({batch_size}, H, W, 3), "
                f"got {tuple(image.shape)} {image.dtype}"
            )
        scaled = image.permute(0, 3, 1, 2).float() / 255.0
        pixels.append(resize_with_pad(scaled, size) * 2.0 - 1.0)
        masks.append(torch.ones(batch_size, dtype=torch.bool, device=device))
    return pixels, masks
