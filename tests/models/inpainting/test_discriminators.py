"""T-PatchGAN, multi-class discriminator with STAM (position, formula), GAN and reconstruction
losses (golden values), perceptual loss only from given weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from instseg.models.inpainting.discriminators import (
    STAM,
    MultiClassDiscriminator,
    PerceptualLoss,
    TPatchGAN,
    hinge_d_loss,
    hinge_g_loss,
    multiclass_d_loss,
    multiclass_g_loss,
    reconstruction_losses,
)


def test_tpatchgan_shapes_and_spectral_norm():
    torch.manual_seed(0)
    d = TPatchGAN(base_channels=4, downsample=4)
    out = d(torch.randn(2, 3, 4, 32, 48))
    assert out.shape == (2, 3, 1, 2, 3)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 6 and all(c.kernel_size == (3, 5, 5) for c in convs)
    assert all(hasattr(c, "weight_orig") for c in convs)  # spectral norm
    assert TPatchGAN(base_channels=4)(torch.randn(1, 2, 4, 64, 64)).shape == (1, 2, 1, 1, 1)


def test_multiclass_discriminator_has_stam_after_the_fourth_conv():
    torch.manual_seed(0)
    d = MultiClassDiscriminator(num_classes=5, base_channels=4)
    order = []
    for m in d.body:
        if isinstance(m, (nn.Conv3d, STAM)):
            m.register_forward_hook(lambda mod, i, o: order.append(type(mod).__name__))
    logits = d(torch.randn(2, 3, 4, 32, 32))
    assert logits.shape == (2, 6)
    assert order == ["Conv3d"] * 4 + ["STAM"] + ["Conv3d"] * 2
    convs = [m for m in d.body if isinstance(m, nn.Conv3d)]
    assert len(convs) == 6 and all(c.kernel_size == (3, 5, 5) for c in convs)


def test_stam_formula_and_attention_shapes():
    torch.manual_seed(0)
    stam = STAM(channels=16)
    x = torch.randn(2, 16, 4, 5, 7)
    a_s, a_t = stam.attention(x)
    assert a_s.shape == (2, 1, 4, 5, 7) and a_t.shape == (2, 1, 4, 1, 1)
    assert ((a_s > 0) & (a_s < 1)).all() and ((a_t > 0) & (a_t < 1)).all()
    torch.testing.assert_close(stam(x), x + x * a_s * a_t)
    # temporal weights depend on the frame: a frame with large activations is weighted differently
    x2 = x.clone()
    x2[:, :, 2] *= 10
    assert not torch.allclose(stam.attention(x2)[1][:, :, 2], a_t[:, :, 2])


def test_hinge_losses_golden():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.25 + 0.5)
    assert hinge_g_loss(fake).item() == pytest.approx(1.0)


def test_multiclass_losses_golden():
    real = torch.tensor([[2.0, 0.0, 0.0]])  # K = 2 classes + fake
    fake = torch.tensor([[0.0, 0.0, 1.0]])
    labels = torch.tensor([0])
    ce_real = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce_fake_as_fake = -math.log(math.e / (math.e + 2))
    ce_fake_as_real = -math.log(1 / (math.e + 2))
    assert multiclass_d_loss(real, fake, labels).item() == pytest.approx(
        ce_real + ce_fake_as_fake, rel=1e-5
    )
    assert multiclass_g_loss(fake, labels).item() == pytest.approx(ce_fake_as_real, rel=1e-5)
    with pytest.raises(ValueError, match="labels"):
        multiclass_g_loss(fake, torch.tensor([2]))


def test_reconstruction_losses_golden():
    pred = torch.zeros(1, 1, 3, 2, 2)
    target = torch.zeros(1, 1, 3, 2, 2)
    target[..., 0, 0] = 1.0  # hole pixel off by 1
    target[..., 1, 1] = 0.5  # valid pixel off by 0.5
    hole = torch.zeros(1, 1, 1, 2, 2)
    hole[..., 0, 0] = 1
    out = reconstruction_losses(pred, target, hole)
    assert out["l1_hole"].item() == pytest.approx(1.0)
    assert out["l1_valid"].item() == pytest.approx(0.5 / 3)


def test_perceptual_loss_needs_weights(tmp_path):
    torch.manual_seed(0)
    feats = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    loss = PerceptualLoss(features=feats, layers=(1, 2))
    a = torch.rand(2, 3, 8, 8) * 2 - 1
    assert loss(a, a).item() == 0.0
    b = (a + 0.3 * torch.randn_like(a)).requires_grad_(True)
    value = loss(b, a)
    value.backward()
    assert value.item() > 0 and b.grad.abs().sum() > 0
    assert all(p.grad is None for p in feats.parameters())
    with pytest.raises(FileNotFoundError, match="VGG16"):
        PerceptualLoss.from_vgg16_file(tmp_path / "missing.pth")
