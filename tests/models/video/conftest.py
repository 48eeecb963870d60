"""Shared toy data for the video model tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F


@pytest.fixture
def toy_clip() -> Callable[..., tuple[list[torch.Tensor], list[np.ndarray]]]:
    """-> make(frames=8, size=24, seed=0): two objects with their own (noisy) feature
    directions moving over a background of two textures -> (feature maps (C, h, w) per frame,
    label maps (h, w) uint8 per frame)."""
    return _toy_clip


def _toy_clip(
    frames: int = 8, size: int = 24, seed: int = 0
) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """Two objects with their own (noisy) feature directions moving right over a background
    of two textures -> (feature maps (C, h, w) per frame, label maps (h, w) per frame)."""
    g = torch.Generator().manual_seed(seed)
    c = 16
    dirs = F.normalize(torch.randn(4, c, generator=g), dim=1)  # bg a, bg b, obj 1, obj 2
    feats, labels = [], []
    for t in range(frames):
        lab = np.zeros((size, size), np.uint8)
        lab[4:12, 2 + t : 10 + t] = 1
        lab[14:20, 12 - t // 2 : 18 - t // 2] = 2
        kind = torch.zeros(size, size, dtype=torch.long)
        kind[:, size // 2 :] = 1
        kind[torch.from_numpy(lab == 1)] = 2
        kind[torch.from_numpy(lab == 2)] = 3
        f = dirs[kind].permute(2, 0, 1) + 0.15 * torch.randn(c, size, size, generator=g)
        feats.append(F.normalize(f, dim=0))
        labels.append(lab)
    return feats, labels
