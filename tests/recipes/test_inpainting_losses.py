"""Every loss term of the VOIN training stages trains something: on a random batch each term,
alone, has a nonzero gradient with respect to its network (issue 16: the generator's valid-pixel
L1 was taken on the composed output, which equals the ground truth outside the hole, so it was
identically 0)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from instseg.models.inpainting.discriminators import MultiClassDiscriminator, TPatchGAN
from instseg.models.inpainting.generator import compose
from instseg.models.inpainting.training_stages import FlowStage, ShapeStage
from instseg.models.inpainting.voin import voin_nets_small
from instseg.recipes.inpainting_gan import G_WEIGHTS, discriminator_losses, generator_losses


def _grad_norm(term: Tensor, params: list[nn.Parameter]) -> float:
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return sum(float(g.abs().sum()) for g in grads if g is not None)


def _gan_batch(b=2, t=3, h=32, w=32) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    holes = torch.zeros(b, t, 1, h, w)
    holes[..., 8:20, 10:22] = 1
    amodal = torch.zeros_like(holes)
    amodal[..., 4:26, 6:26] = 1
    gt = torch.rand(b, t, 3, h, w, generator=g) * 2 - 1
    return {"frames": gt * (1 - holes), "gt": gt, "holes": holes, "amodal": amodal}


@pytest.fixture(scope="module")
def gan():
    torch.manual_seed(0)
    gen = voin_nets_small(num_classes=1).generator
    d_patch = TPatchGAN(base_channels=4, downsample=3)
    d_cls = MultiClassDiscriminator(num_classes=1, base_channels=4)
    return gen, d_patch, d_cls


def test_every_generator_term_has_a_gradient(gan):
    gen, d_patch, d_cls = gan
    b = _gan_batch()
    labels = torch.zeros(2, dtype=torch.long)
    raw = gen(b["frames"], b["holes"], b["holes"], b["amodal"])
    out = compose(raw, b["frames"], b["holes"])
    terms = generator_losses(d_patch, d_cls, b, raw, out, labels)
    assert set(terms) == set(G_WEIGHTS) == {"l1_hole", "l1_valid", "adv_patch", "adv_class"}
    params = list(gen.parameters())
    for name, term in terms.items():
        assert term.ndim == 0 and torch.isfinite(term), name
        assert _grad_norm(term, params) > 0, name
    assert terms["l1_valid"] > 0
    # the bug this guards against: on the composed output the valid term is exactly 0
    from instseg.models.inpainting.discriminators import reconstruction_losses

    assert reconstruction_losses(out, b["gt"], b["holes"])["l1_valid"] == 0


def test_every_discriminator_term_has_a_gradient(gan):
    gen, d_patch, d_cls = gan
    b = _gan_batch()
    with torch.no_grad():
        fake = gen.inpaint(b["frames"], b["holes"], b["holes"], b["amodal"])
    terms = discriminator_losses(d_patch, d_cls, b, fake, torch.zeros(2, dtype=torch.long))
    assert set(terms) == {"patch", "class"}
    for name, term, net in (("patch", terms["patch"], d_patch), ("class", terms["class"], d_cls)):
        assert _grad_norm(term, list(net.parameters())) > 0, name


def test_every_shape_and_flow_term_has_a_gradient():
    torch.manual_seed(0)
    nets = voin_nets_small(num_classes=1)
    g = torch.Generator().manual_seed(1)
    amodal = torch.zeros(2, 3, 1, 32, 32)
    amodal[..., 6:26, 8:24] = 1
    visible = amodal.clone()
    visible[..., 16:, :] = 0
    shape = ShapeStage(nets.shape_net)
    terms = shape.loss({"visible": visible, "amodal": amodal, "labels": torch.zeros(2).long()})
    assert set(terms) == {"bce", "dice"}
    for name, term in terms.items():
        assert _grad_norm(term, list(shape.parameters())) > 0, name

    h = w = 32
    am = torch.zeros(2, 1, h, w)
    am[..., 6:26, 8:24] = 1
    vis = am.clone()
    vis[..., 16:, :] = 0
    batch = {
        "frame_a": torch.rand(2, 3, h, w, generator=g),
        "frame_b": torch.rand(2, 3, h, w, generator=g),
        "clean_a": torch.rand(2, 3, h, w, generator=g),
        "clean_b": torch.rand(2, 3, h, w, generator=g),
        "flow": torch.randn(2, 2, h, w, generator=g),
        "gt": torch.randn(2, 2, h, w, generator=g),
        "visible": vis,
        "amodal": am,
    }
    flow = FlowStage(nets.flow_net)
    terms = flow.loss(batch)
    assert set(terms) == {"l1", "gradient", "laplacian", "warping"}
    for name, term in terms.items():
        assert _grad_norm(term, list(flow.parameters())) > 0, name
