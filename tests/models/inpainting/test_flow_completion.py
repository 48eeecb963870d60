"""Flow completion U-Net (residual inside the amodal mask, overfitting a known residual flow
drives EPE down) and its losses (golden values)."""

from __future__ import annotations

import pytest
import torch

from instseg.evaluation.inpainting import flow_epe
from instseg.models.inpainting.flow import warp
from instseg.models.inpainting.flow_completion import (
    FlowCompletionNet,
    flow_completion_losses,
    flow_gradient_loss,
    flow_l1_loss,
    flow_smoothness_loss,
    flow_warping_loss,
    laplacian_pyramid_loss,
)

H = W = 24


def _toy():
    """Object moving by (2, -1); the initial flow is lost (zero) in its occluded right half."""
    g = torch.Generator().manual_seed(0)
    img0, img1 = torch.rand(1, 3, H, W, generator=g), torch.rand(1, 3, H, W, generator=g)
    amodal = torch.zeros(1, 1, H, W)
    amodal[..., 6:18, 5:19] = 1
    visible = amodal.clone()
    visible[..., 6:18, 12:19] = 0
    gt = torch.cat([2.0 * amodal, -1.0 * amodal], dim=1)
    return img0, img1, gt * visible, visible, amodal, gt


def test_untrained_net_returns_initial_flow_and_residual_stays_in_amodal():
    torch.manual_seed(0)
    net = FlowCompletionNet(base_channels=4, depth=3)
    img0, img1, init, visible, amodal, _ = _toy()
    torch.testing.assert_close(net(img0, img1, init, visible, amodal), init)  # zero-init head
    torch.nn.init.normal_(net.head.weight, std=0.1)
    out = net(img0, img1, init, visible, amodal)
    outside = amodal.expand_as(out) == 0
    assert torch.equal(out[outside], init[outside])
    assert not torch.allclose(out[~outside], init[~outside])
    odd = net(
        img0[..., :21, :23],
        img1[..., :21, :23],
        init[..., :21, :23],
        visible[..., :21, :23],
        amodal[..., :21, :23],
    )
    assert odd.shape == (1, 2, 21, 23)
    with pytest.raises(ValueError, match="flow"):
        net(img0, img1, init[:, :1], visible, amodal)


def test_tiny_net_overfits_known_residual_epe_falls():
    torch.manual_seed(0)
    net = FlowCompletionNet(base_channels=8, depth=3)
    img0, img1, init, visible, amodal, gt = _toy()
    hole = (amodal - visible)[:, 0].bool()
    assert flow_epe(init, gt, hole) == pytest.approx(5**0.5)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(80):
        pred = net(img0, img1, init, visible, amodal)
        terms = flow_completion_losses(pred, gt, mask=amodal)
        loss = terms["l1"] + terms["gradient"] + terms["laplacian"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(img0, img1, init, visible, amodal)
    assert flow_epe(pred, gt, hole) < 0.3
    assert flow_epe(pred, gt, visible[:, 0].bool()) < 0.3


def test_l1_gradient_smoothness_golden():
    gt = torch.zeros(1, 2, 4, 5)
    pred = gt + 0.5
    mask = torch.zeros(1, 1, 4, 5)
    mask[..., :2, :] = 1
    assert flow_l1_loss(pred, gt, mask).item() == pytest.approx(0.5)
    assert flow_gradient_loss(pred, gt, mask).item() == pytest.approx(0.0)  # constant offset
    ramp = torch.arange(5.0).expand(1, 2, 4, 5).clone()  # slope 1 along x, 0 along y
    assert flow_smoothness_loss(ramp).item() == pytest.approx(1.0)
    assert flow_gradient_loss(ramp, gt).item() == pytest.approx(1.0)
    step = torch.zeros(1, 2, 4, 5)
    step[..., 3:] = 4.0  # a motion boundary between x=2 and x=3
    inside = torch.ones(1, 1, 4, 5)
    inside[..., 3:] = 0
    assert flow_smoothness_loss(step, inside).item() == 0.0  # boundary pairs are outside


def test_laplacian_pyramid_loss_golden():
    a = torch.rand(2, 2, 16, 16)
    assert laplacian_pyramid_loss(a, a).item() == 0.0
    # a constant offset only shows up in the coarsest level: loss = |c|
    assert laplacian_pyramid_loss(a + 0.7, a).item() == pytest.approx(0.7, abs=1e-5)
    # a one-pixel spike is penalised at several levels (more than its plain mean L1)
    b = a.clone()
    b[..., 8, 8] += 1.0
    assert laplacian_pyramid_loss(b, a).item() > (b - a).abs().mean().item()


def test_warping_loss_uses_the_flow():
    g = torch.Generator().manual_seed(1)
    img1 = torch.rand(1, 3, H, W, generator=g)
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0] = 3.0
    img0 = warp(img1, flow)  # frame a such that flow a->b is exactly (3, 0)
    assert flow_warping_loss(flow, img0, img1).item() < 1e-6
    assert flow_warping_loss(torch.zeros_like(flow), img0, img1).item() > 0.1
    terms = flow_completion_losses(flow, flow, frame_a=img0, frame_b=img1)
    assert set(terms) == {"l1", "gradient", "laplacian", "warping"}
    assert all(v.item() < 1e-6 for v in terms.values())
