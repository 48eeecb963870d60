"""mask_contours: morphological gradient of the projected masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from instseg.models.heads.contours import mask_contours


def _square(size: int = 10) -> torch.Tensor:
    m = torch.zeros(1, size, size, dtype=torch.bool)
    m[0, 3:7, 3:7] = True
    return m


def test_square_footprint_gives_two_pixel_band():
    c = mask_contours(_square())
    expected = torch.zeros(1, 10, 10)
    expected[0, 2:8, 2:8] = 1  # dilation
    expected[0, 4:6, 4:6] = 0  # minus erosion
    assert c.dtype == torch.float32
    assert torch.equal(c, expected)
    assert int(c.sum()) == 32


def test_cross_footprint_skips_corners():
    c = mask_contours(_square(), footprint="cross")
    expected = torch.zeros(1, 10, 10)
    expected[0, 2:8, 3:7] = 1
    expected[0, 3:7, 2:8] = 1
    expected[0, 4:6, 4:6] = 0
    assert torch.equal(c, expected)
    assert int(c.sum()) == 28


def test_roi_border_is_not_a_contour():
    full = torch.ones(1, 6, 6, dtype=torch.bool)
    assert mask_contours(full).sum() == 0
    left = torch.zeros(1, 6, 6, dtype=torch.bool)
    left[0, :, :3] = True  # object cut by the left, top and bottom borders
    c = mask_contours(left)
    expected = torch.zeros(1, 6, 6)
    expected[0, :, 2:4] = 1  # only the inner vertical edge, 1 px in + 1 px out
    assert torch.equal(c, expected)


def test_soft_masks_are_thresholded_at_half():
    soft = torch.full((1, 10, 10), 0.4)
    soft[0, 3:7, 3:7] = 0.6
    assert torch.equal(mask_contours(soft), mask_contours(_square()))
    assert mask_contours(torch.full((1, 5, 5), 0.49)).sum() == 0


@pytest.mark.parametrize("width", [1, 2])
@pytest.mark.parametrize("footprint", ["square", "cross"])
def test_parity_with_scipy_binary_morphology(width: int, footprint: str):
    rng = np.random.default_rng(0)
    masks = rng.random((4, 16, 16)) > 0.55
    base = (
        np.ones((3, 3), bool) if footprint == "square" else ndimage.generate_binary_structure(2, 1)
    )
    ours = mask_contours(torch.from_numpy(masks), width=width, footprint=footprint).numpy()
    for m, c in zip(masks, ours, strict=True):
        dil = ndimage.binary_dilation(m, base, iterations=width)
        ero = ndimage.binary_erosion(m, base, iterations=width, border_value=1)
        np.testing.assert_array_equal(c.astype(bool), dil ^ ero)


def test_width_zero_empty_batch_and_bad_input():
    assert mask_contours(_square(), width=0).sum() == 0
    assert mask_contours(torch.zeros(0, 28, 28)).shape == (0, 28, 28)
    wide = mask_contours(_square(12), width=2)
    assert int(wide.sum()) == 64  # dilation 8x8 = 64, erosion of a 4x4 by 5x5 is empty
    with pytest.raises(ValueError, match="R, H, W"):
        mask_contours(torch.zeros(28, 28))
    with pytest.raises(ValueError, match="footprint"):
        mask_contours(_square(), footprint="disk")  # type: ignore[arg-type]
