"""FPNRoIAlign: aligned pooling of the mask features (issue 14, fix 5) and the legacy mode."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import LevelMapper

from instseg.models.layers.roi_align import FPNRoIAlign, fpn_levels
from instseg.models.segmenter import project_masks

NAMES, STRIDES = ["p2", "p3", "p4", "p5"], [4, 8, 16, 32]


def _features(h: int = 512, w: int = 640, c: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    levels = zip(NAMES, STRIDES, strict=True)
    return {n: torch.randn(2, c, h // s, w // s, generator=g) for n, s in levels}


def _boxes() -> list[torch.Tensor]:
    """Small to large boxes (every level gets some), two images."""
    a = torch.tensor([[3.0, 5, 20, 17], [10, 10, 90, 70], [0, 0, 250, 240], [40.5, 7.25, 61, 150]])
    b = torch.tensor([[100.0, 50, 600, 500], [7, 9, 13, 30], [60, 60, 200, 200]])
    return [a, b]


def _ramp_image_coords(h: int, w: int, stride: int) -> torch.Tensor:
    """(1, 2, h/s, w/s): channel 0 = image x, channel 1 = image y of each feature pixel's centre
    ((i + 0.5) * stride): what a feature map of the image function (x, y) holds."""
    ys = (torch.arange(h // stride, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w // stride, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy])[None]


def test_legacy_mode_is_torchvision_multiscale_roi_align():
    feats, boxes = _features(), _boxes()
    ref = MultiScaleRoIAlign(NAMES, output_size=14, sampling_ratio=2)(
        feats, boxes, [(512, 640)] * 2
    )
    got = FPNRoIAlign(NAMES, STRIDES, 14, sampling_ratio=2, aligned=False)(feats, boxes)
    assert torch.equal(got, ref)


def test_level_rule_is_fpn_eq_1_and_aligned_pools_each_box_on_its_level():
    feats, boxes = _features(), _boxes()
    flat = torch.cat(boxes)
    levels = fpn_levels(flat, k_min=2, k_max=5)
    assert torch.equal(levels, LevelMapper(2, 5)(boxes))
    assert set(levels.tolist()) == {0, 1, 2, 3}  # the fixture reaches every level
    got = FPNRoIAlign(NAMES, STRIDES, 14, sampling_ratio=2)(feats, boxes)
    batch = torch.tensor([0.0] * len(boxes[0]) + [1.0] * len(boxes[1]))
    rois = torch.cat([batch[:, None], flat], dim=1)
    for r, k in enumerate(levels.tolist()):
        want = roi_align(feats[NAMES[k]], rois[r : r + 1], 14, 1 / STRIDES[k], 2, aligned=True)
        torch.testing.assert_close(got[r : r + 1], want)


@pytest.mark.parametrize("stride", [4, 16])
def test_known_box_pools_its_image_space_bin_centres(stride):
    """On a feature map holding each pixel centre's image coordinates, aligned pooling of a box
    gives exactly the image coordinates of the S x S bin centres (where the mask targets'
    cells are: project_masks samples with aligned=True); the legacy pooling reads them half a
    feature pixel (stride / 2 image pixels) to the right and below."""
    h, w, s = 256, 320, 7
    feats = {"p": _ramp_image_coords(h, w, stride)}
    box = torch.tensor([[37.0, 52.0, 201.0, 172.0]])
    centres_x = box[0, 0] + (torch.arange(s) + 0.5) * (box[0, 2] - box[0, 0]) / s
    centres_y = box[0, 1] + (torch.arange(s) + 0.5) * (box[0, 3] - box[0, 1]) / s
    aligned = FPNRoIAlign(["p"], [stride], s, sampling_ratio=2)(feats, [box])[0]
    legacy = FPNRoIAlign(["p"], [stride], s, sampling_ratio=2, aligned=False)(feats, [box])[0]
    torch.testing.assert_close(aligned[0], centres_x[None].expand(s, s))
    torch.testing.assert_close(aligned[1], centres_y[:, None].expand(s, s))
    torch.testing.assert_close(
        legacy[0] - aligned[0], torch.full((s, s), stride / 2), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        legacy[1] - aligned[1], torch.full((s, s), stride / 2), atol=1e-4, rtol=0
    )


def test_features_and_targets_agree_on_an_edge():
    """A vertical edge at image x = 96 in the box [65, 32, 121, 88] (14 cells of 4 px, centres
    67 + 4j): the target columns switch at j = 8 (centre 99; j = 7 is centred at 95). A stride-4
    feature map of the image (4x4 cell averages) pooled with aligned=True switches at the same
    column; the legacy pooling reads 2 px to the right and switches one column early."""
    h = w = 128
    bitmap = torch.zeros(1, h, w, dtype=torch.bool)
    bitmap[:, :, 96:] = True
    box = torch.tensor([[65.0, 32.0, 121.0, 88.0]])
    target = project_masks(bitmap, box, torch.tensor([0]), 14)[0]
    assert torch.equal(target[0], (torch.arange(14) >= 8).float())
    feat = {"p": torch.nn.functional.avg_pool2d(bitmap[None].float(), 4)}
    for aligned, first in ((True, 8), (False, 7)):
        pooled = FPNRoIAlign(["p"], [4], 14, sampling_ratio=2, aligned=aligned)(feat, [box])
        row = pooled[0, 0, 7]
        assert torch.equal(row >= 0.5, torch.arange(14) >= first), (aligned, row)


def test_empty_boxes_and_bad_configuration():
    pool = FPNRoIAlign(NAMES, STRIDES, 14)
    out = pool(_features(), [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert out.shape == (0, 3, 14, 14)
    with pytest.raises(ValueError, match="one stride per level"):
        FPNRoIAlign(NAMES, STRIDES[:3], 14)
    with pytest.raises(ValueError, match="powers of two"):
        FPNRoIAlign(["a", "b"], [4, 12], 14)
    with pytest.raises(ValueError, match="consecutive"):
        FPNRoIAlign(["a", "b"], [4, 16], 14)
