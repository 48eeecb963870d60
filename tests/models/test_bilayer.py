"""BilayerMaskHead (BCNet), its ablation variants and bilayer_loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from instseg.models.heads.base import MaskTargets
from instseg.models.heads.bilayer import (
    BilayerLossWeights,
    BilayerMaskHead,
    bilayer_inference,
    bilayer_loss,
)
from instseg.models.heads.contours import mask_contours
from instseg.models.layers.non_local import NonLocalBlock
from instseg.models.zoo import BILAYER_HEADS as BH

C = 16  # tiny heads: 16 channels, 7x7 RoIs -> 14x14 masks
OCC = {"occluder_mask", "occluder_contour"}

BUILDERS = {
    BH["bcnet"]: {"mask", "contour"} | OCC,
    BH["bcnet_paper"]: {"mask", "contour"} | OCC,
    BH["bcnet_no_occ_targets"]: {"mask", "contour"},
    BH["bcnet_occ_mask"]: {"mask", "contour", "occluder_mask"},
    BH["bcnet_occ_contour"]: {"mask", "contour", "occluder_contour"},
    BH["bcnet_no_guidance"]: {"mask", "contour"} | OCC,
    BH["bilayer_fcn"]: {"mask", "contour"} | OCC,
    BH["single_gcn"]: {"mask", "contour"},
    BH["single_fcn"]: {"mask"},  # the Mask R-CNN baseline head
}


def _id(f) -> str:
    return str(getattr(f, "keywords", None) or getattr(f, "__name__", "default"))


def _targets(r: int = 3, m: int = 14, *, seed: int = 0, has_mask=None) -> MaskTargets:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(r, m, m)
    occluder = torch.zeros(r, m, m)
    for i in range(r):  # a box-shaped occludee and an occluder covering its right part
        x0, y0 = (int(v) for v in torch.randint(0, m // 3, (2,), generator=g))
        masks[i, y0 : y0 + m // 2, x0 : x0 + m // 2] = 1
        occluder[i, :, x0 + m // 3 :] = 1
        masks[i] *= 1 - occluder[i]
    labels = torch.arange(r) % 2
    return MaskTargets(masks=masks, labels=labels, occluder=occluder, has_mask=has_mask)


@pytest.mark.parametrize("builder", list(BUILDERS), ids=_id)
def test_every_variant_shapes_keys_backward(builder):
    torch.manual_seed(0)
    head = builder(in_channels=C, num_classes=3)
    out = head(torch.randn(3, C, 7, 7))
    assert set(out) == BUILDERS[builder]
    for v in out.values():
        assert v.shape == (3, 1, 14, 14) and torch.isfinite(v).all()
    assert head.needs_occluder == bool(OCC & set(out))
    losses = head.loss(out, _targets())
    assert set(losses) == {f"loss_{k}" for k in out}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())
    probs = head.predict(out, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(probs, out["mask"][:, 0].sigmoid())


def test_bilayer_inference_gives_probabilities_of_every_output():
    torch.manual_seed(0)
    head = BilayerMaskHead(in_channels=C, num_classes=2, class_aware=True)
    out = head(torch.randn(2, C, 7, 7))
    labels = torch.tensor([1, 0])
    probs = bilayer_inference(out, labels)
    assert set(probs) == set(out)
    torch.testing.assert_close(probs["contour"], out["contour"][torch.arange(2), labels].sigmoid())
    torch.testing.assert_close(probs["occluder_mask"], out["occluder_mask"][:, 0].sigmoid())


def test_class_aware_head_and_loss_select_the_label_channel():
    torch.manual_seed(0)
    head = BilayerMaskHead(in_channels=C, num_classes=4, class_aware=True)
    out = head(torch.randn(3, C, 7, 7))
    assert out["mask"].shape == (3, 4, 14, 14) and out["contour"].shape == (3, 4, 14, 14)
    assert out["occluder_mask"].shape == (3, 1, 14, 14)  # occluders stay class-agnostic
    t = _targets()
    loss = bilayer_loss(out, t)["loss_mask"]
    picked = out["mask"][torch.arange(3), t.labels]
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(picked, t.masks))
    labels = torch.tensor([3, 0, 2])
    expected = out["mask"][torch.arange(3), labels].sigmoid()
    torch.testing.assert_close(head.predict(out, labels), expected)


def test_gradients_reach_both_branches():
    torch.manual_seed(0)
    head = BilayerMaskHead(in_channels=C)
    out = head(torch.randn(4, C, 7, 7))
    sum(head.loss(out, _targets(4)).values()).backward()
    for layer in (head.occluder, head.occludee):
        for name, p in layer.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def _occluder_grads(head: BilayerMaskHead, key: str) -> list[torch.Tensor | None]:
    out = head(torch.randn(2, C, 7, 7))
    params = list(head.occluder.parameters())
    return list(torch.autograd.grad(out[key].sum(), params, allow_unused=True))


def test_guidance_off_disconnects_layer1_from_layer2():
    torch.manual_seed(0)
    off = BilayerMaskHead(in_channels=C, guidance=False)
    assert all(g is None for g in _occluder_grads(off, "mask"))
    assert all(g is None for g in _occluder_grads(off, "contour"))
    x = torch.randn(2, C, 7, 7)
    before = off(x)["mask"]
    with torch.no_grad():  # layer 1 can change arbitrarily without moving the occludee output
        for p in off.occluder.parameters():
            p.add_(torch.randn_like(p))
    assert torch.equal(off(x)["mask"], before)
    on = BilayerMaskHead(in_channels=C, guidance=True)
    grads = _occluder_grads(on, "mask")
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_no_targets_no_guidance_builds_no_dead_layer():
    head = BilayerMaskHead(in_channels=C, occluder_targets="none", guidance=False)
    assert head.occluder is None and not head.needs_occluder


def _n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts():
    c = 256
    conv3, deconv, pred = c * c * 9 + c, c * c * 4 + c, c + 1
    nl = _n(NonLocalBlock(channels=c))
    assert nl == 3 * c * c + 2 * c  # theta, phi, W_g (no bias) + layer norm
    layer = 4 * conv3 + nl + deconv
    assert _n(BH["bcnet"](in_channels=c)) == 2 * layer + 4 * pred == 5_640_708
    assert _n(BH["single_gcn"](in_channels=c)) == layer + 2 * pred
    assert _n(BH["bcnet"](in_channels=c)) - _n(BH["single_gcn"](in_channels=c)) == layer + 2 * pred
    assert _n(BH["bcnet"](in_channels=c)) - _n(BH["bilayer_fcn"](in_channels=c)) == 2 * nl
    # single FCN = the Mask R-CNN head: single GCN adds the non-local block and a contour output
    assert _n(BH["single_fcn"](in_channels=c)) == 4 * conv3 + deconv + pred
    assert _n(BH["single_gcn"](in_channels=c)) - _n(BH["single_fcn"](in_channels=c)) == nl + pred
    # Table 3.3 orders: single FCN < single GCN < bilayer FCN < bilayer GCN
    sizes = [
        _n(f(in_channels=c))
        for f in (BH["single_fcn"], BH["single_gcn"], BH["bilayer_fcn"], BH["bcnet"])
    ]
    assert sizes == sorted(sizes)


def test_single_fcn_is_the_mask_rcnn_baseline_head():
    """Survey Tables 3.3-3.4: the single-layer FCN row is the Mask R-CNN baseline head. Built
    from the same random state, it is the *_maskrcnn models' head: same class, same tensors."""
    from instseg.models.heads.mask_rcnn import MaskRCNNHead
    from instseg.models.zoo import build_model

    kw = dict(num_classes=3, pretrained=False)
    torch.manual_seed(0)
    single = build_model("effl0_fcos_single_fcn", **kw).mask_head
    torch.manual_seed(0)
    base = build_model("effl0_fcos_maskrcnn", **kw).mask_head
    assert type(single) is type(base) is MaskRCNNHead and not single.needs_occluder
    a, b = single.state_dict(), base.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    out = single(torch.randn(2, 64, 14, 14))
    assert set(out) == {"mask"}  # no contour output


def test_loss_golden_values_and_independent_recomputation():
    torch.manual_seed(0)
    r, m = 3, 8
    outputs = {
        k: torch.randn(r, 1, m, m) for k in ("mask", "contour", "occluder_mask", "occluder_contour")
    }
    masks = (torch.rand(r, m, m) > 0.5).float()
    occluder = (torch.rand(r, m, m) > 0.6).float()
    keep = torch.tensor([True, False, True])
    t = MaskTargets(
        masks=masks, labels=torch.zeros(r, dtype=torch.long), occluder=occluder, has_mask=keep
    )
    losses = bilayer_loss(outputs, t)
    # contour terms were 0.357596 / 0.407315 with weights 0.5 (the release's 0.5 x JointLoss
    # of two BCEs is 1.0); every RoI here has an occluder, so the occluder RoIs are unchanged
    golden = {
        "loss_mask": 0.745491,
        "loss_contour": 0.715192,
        "loss_occluder_mask": 0.207054,
        "loss_occluder_contour": 0.814630,
    }
    for k, v in golden.items():
        assert losses[k].item() == pytest.approx(v, abs=1e-5), k

    def bce(name, target, weight):
        return weight * F.binary_cross_entropy_with_logits(outputs[name][keep, 0], target[keep])

    torch.testing.assert_close(losses["loss_mask"], bce("mask", masks, 1.0))
    torch.testing.assert_close(losses["loss_contour"], bce("contour", mask_contours(masks), 1.0))
    torch.testing.assert_close(losses["loss_occluder_mask"], bce("occluder_mask", occluder, 0.25))
    torch.testing.assert_close(
        losses["loss_occluder_contour"], bce("occluder_contour", mask_contours(occluder), 1.0)
    )
    doubled = bilayer_loss(outputs, t, weights=BilayerLossWeights(2.0, 0.5, 2.0, 2.0))
    for k in losses:
        torch.testing.assert_close(doubled[k], 2 * losses[k])


def test_default_weights_are_the_release_effective_weights():
    w = BilayerLossWeights()
    # release: loss_mask x1, loss_mask_bo x0.25, both boundary losses x0.5 of JointLoss(BCE, BCE)
    assert (w.mask, w.occluder_mask, w.contour, w.occluder_contour) == (1.0, 0.25, 1.0, 1.0)


def test_occluder_terms_average_over_rois_that_have_an_occluder():
    """RoIs whose occluder target is empty (37-59% on the synthetic data) neither dilute the
    occluder terms nor push layer 1 towards "no occluder"; occludee terms keep every supervised
    RoI; a batch without any occluder gives zero occluder terms, attached to the graph."""
    torch.manual_seed(0)
    r, m = 4, 8
    outputs = {
        k: torch.randn(r, 1, m, m, requires_grad=True)
        for k in ("mask", "contour", "occluder_mask", "occluder_contour")
    }
    masks = (torch.rand(r, m, m) > 0.5).float()
    occluder = torch.zeros(r, m, m)
    occluder[0, :, :3] = 1  # RoIs 0 and 3 have an occluder, 1 and 2 do not
    occluder[3, 5:, :] = 1
    keep = torch.tensor([True, True, True, False])  # RoI 3 is not mask-supervised
    labels = torch.zeros(r, dtype=torch.long)
    t = MaskTargets(masks=masks, labels=labels, occluder=occluder, has_mask=keep)
    losses = bilayer_loss(outputs, t)
    occ = torch.tensor([True, False, False, False])  # supervised and with an occluder

    def bce(name, target, rows, weight):
        return weight * F.binary_cross_entropy_with_logits(outputs[name][rows, 0], target[rows])

    torch.testing.assert_close(
        losses["loss_occluder_mask"], bce("occluder_mask", occluder, occ, 0.25)
    )
    torch.testing.assert_close(
        losses["loss_occluder_contour"],
        bce("occluder_contour", mask_contours(occluder), occ, 1.0),
    )
    torch.testing.assert_close(losses["loss_mask"], bce("mask", masks, keep, 1.0))
    torch.testing.assert_close(
        losses["loss_contour"], bce("contour", mask_contours(masks), keep, 1.0)
    )
    (losses["loss_occluder_mask"] + losses["loss_occluder_contour"]).backward()
    for name in ("occluder_mask", "occluder_contour"):
        g = outputs[name].grad
        assert g[0].abs().sum() > 0 and (g[1:] == 0).all(), name
    none = MaskTargets(masks=masks, labels=labels, occluder=torch.zeros(r, m, m), has_mask=keep)
    zero = bilayer_loss(outputs, none)
    for name in ("loss_occluder_mask", "loss_occluder_contour"):
        assert zero[name].item() == 0.0 and zero[name].requires_grad, name
    assert zero["loss_mask"].item() > 0


def test_loss_without_supervised_rois_is_zero_but_attached():
    torch.manual_seed(0)
    head = BilayerMaskHead(in_channels=C)
    out = head(torch.randn(2, C, 7, 7))
    t = _targets(2, has_mask=torch.tensor([False, False]))
    losses = head.loss(out, t)
    total = sum(losses.values())
    assert total.item() == 0.0 and total.requires_grad
    total.backward()


def test_loss_errors():
    head = BilayerMaskHead(in_channels=C)
    out = head(torch.randn(2, C, 7, 7))
    t = _targets(2)
    with pytest.raises(ValueError, match="occluder is None"):
        head.loss(out, MaskTargets(masks=t.masks, labels=t.labels))
    with pytest.raises(ValueError, match="vs targets"):
        head.loss(out, _targets(2, m=28))
    with pytest.raises(ValueError, match="3 targets"):
        head.loss(out, _targets(3))


def test_bad_configuration_and_input():
    with pytest.raises(ValueError, match="occluder_targets"):
        BilayerMaskHead(in_channels=C, occluder_targets="amodal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block"):
        BilayerMaskHead(in_channels=C, block="transformer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="conv_dim"):
        BilayerMaskHead(in_channels=C, conv_dim=8)
    single = BilayerMaskHead(in_channels=C, conv_dim=8, bilayer=False)
    assert single(torch.randn(1, C, 7, 7))["mask"].shape == (1, 1, 14, 14)
    with pytest.raises(ValueError, match="RoI features"):
        BilayerMaskHead(in_channels=C)(torch.randn(1, C + 1, 7, 7))


def test_empty_rois():
    head = BilayerMaskHead(in_channels=C)
    out = head(torch.zeros(0, C, 7, 7))
    assert all(v.shape == (0, 1, 14, 14) for v in out.values())
    losses = head.loss(out, _targets(0))
    assert all(v.item() == 0.0 for v in losses.values())


def test_tiny_overfit_loss_falls():
    torch.manual_seed(0)
    head = BilayerMaskHead(in_channels=8, convs_before_gcn=1, convs_after_gcn=1)
    x = torch.randn(4, 8, 7, 7)
    t = _targets(4, seed=1)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    history = []
    for _ in range(80):
        loss = sum(head.loss(head(x), t).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.3 * history[0], history[::10]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forward_loss_and_occluder_targets():
    from instseg.data.occlusion import compute_occluder_masks

    dev = torch.device("cuda")
    head = BilayerMaskHead(in_channels=C).to(dev)
    masks = torch.zeros(2, 20, 20, dtype=torch.bool, device=dev)
    masks[0, 2:10, 2:10] = True
    masks[1, 6:14, 6:14] = True
    boxes = torch.tensor([[2.0, 2, 10, 10], [6, 6, 14, 14]], device=dev)
    occ = compute_occluder_masks(masks, boxes, depth=torch.tensor([0, 1], device=dev))
    assert occ.device.type == "cuda" and int(occ[1].sum()) == 16 and not occ[0].any()
    t = _targets(3)
    t = MaskTargets(masks=t.masks.to(dev), labels=t.labels.to(dev), occluder=t.occluder.to(dev))
    with torch.autocast("cuda", dtype=torch.float16):
        losses = head.loss(head(torch.randn(3, C, 7, 7, device=dev)), t)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("std", [1.0, 46.0])
@pytest.mark.parametrize("name", ["bcnet", "single_gcn"])
def test_gcn_layers_are_not_inert_at_init(name, std):
    """Both graph layers at init on RoI features of std 1 and of std 46 (a trained FPN's scale,
    where the literal Eq. 3.1-3.3 block had one-hot affinity rows and a branch of 1.6% of |X|):
    affinity entropy well above 0 and below uniform, branch/|X| in 0.05..2."""
    torch.manual_seed(0)
    head = BH[name](in_channels=64)
    x = torch.randn(4, 64, 14, 14) * std
    uniform = torch.log(torch.tensor(14.0 * 14.0)).item()
    layers = [head.occluder, head.occludee] if head.occluder is not None else [head.occludee]
    with torch.no_grad():
        for layer in layers:
            h = layer.pre(x)
            z, a = layer.gcn.forward_with_affinity(h)
            entropy = float(-(a.clamp_min(1e-12).log() * a).sum(-1).mean())
            ratio = float(((z - h).flatten(1).norm(dim=1) / h.flatten(1).norm(dim=1)).mean())
            assert 0.3 * uniform < entropy < 0.99 * uniform, entropy
            assert 0.05 < ratio < 2.0, ratio
