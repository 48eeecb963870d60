"""ResNet-50 backbone (torchvision) from a user-given ImageNet weight file.

No weights ship with the project and nothing is downloaded: pass ``weights=`` a ``.pth`` /
``.pt`` / ``.safetensors`` file with torchvision (or timm, same key names) ResNet-50 keys, or
``random_init=True`` explicitly to run without them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["ResNet50", "load_resnet50_weights", "IMAGENET_PIXEL_MEAN", "IMAGENET_PIXEL_STD"]

#: ImageNet mean/std on 0..255 RGB (torchvision / timm ResNet weights)
IMAGENET_PIXEL_MEAN = (123.675, 116.28, 103.53)
IMAGENET_PIXEL_STD = (58.395, 57.12, 57.375)
_STAGES = {4: "layer1", 8: "layer2", 16: "layer3", 32: "layer4"}
_CHANNELS = {4: 256, 8: 512, 16: 1024, 32: 2048}


class ResNet50(nn.Module):
    """ResNet-50 feature extractor.

    forward: (B, 3, H, W) normalised image -> OrderedDict ``{"c2": (B, 256, H/4, W/4),
    "c3": (B, 512, H/8, W/8), "c4": (B, 1024, H/16, W/16), "c5": (B, 2048, H/32, W/32)}``
    restricted to ``out_strides``.

    Args:
        weights: ImageNet weight file (torchvision/timm ResNet-50 naming; ``fc.*`` ignored).
        random_init: must be True to build without ``weights`` (else ``ValueError``).
        out_strides: subset of (4, 8, 16, 32).
        frozen_bn: use torchvision's FrozenBatchNorm2d (fixed statistics and affine).
        freeze_at: 0 trains everything; 1 freezes the stem; k >= 2 also freezes
            ``layer1 .. layer{k-1}`` (detectron2's FREEZE_AT convention).
    """

    pixel_mean: tuple[float, float, float] = IMAGENET_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_PIXEL_STD

    def __init__(
        self,
        *,
        weights: str | Path | None,
        random_init: bool = False,
        out_strides: Sequence[int] = (8, 16, 32),
        frozen_bn: bool = True,
        freeze_at: int = 2,
    ) -> None:
        super().__init__()
        if weights is None and not random_init:
            raise ValueError(
                "ResNet50 needs ImageNet weights: pass weights='/path/to/resnet50.pth' "
                "(torchvision or timm ResNet-50 state dict), "
                "or random_init=True to train from scratch"
            )
        if weights is not None and random_init:
            raise ValueError("ResNet50: give either weights=... or random_init=True, not both")
        bad = [s for s in out_strides if s not in _STAGES]
        if bad or not out_strides:
            raise ValueError(
                f"out_strides must be a non-empty subset of (4, 8, 16, 32), got {out_strides}"
            )
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in 0..5, got {freeze_at}")
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        net = torchvision.models.resnet50(weights=None, norm_layer=norm)
        if weights is not None:
            sd = load_resnet50_weights(weights, frozen_bn=frozen_bn)
            missing, _ = net.load_state_dict(sd, strict=False)  # only fc.* may be missing
            if any(not k.startswith("fc.") and "num_batches_tracked" not in k for k in missing):
                raise RuntimeError(f"{weights}: ResNet-50 keys not loaded: {missing[:5]}")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.strides = sorted(int(s) for s in out_strides)
        self.out_channels = [_CHANNELS[s] for s in self.strides]
        self.names = [f"c{s.bit_length() - 1}" for s in self.strides]
        frozen = [self.stem, self.layer1, self.layer2, self.layer3, self.layer4][:freeze_at]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        x = self.stem(x)
        last = self.strides[-1]
        for stride, name in zip((4, 8, 16, 32), ("c2", "c3", "c4", "c5"), strict=True):
            x = getattr(self, _STAGES[stride])(x)
            if stride in self.strides:
                out[name] = x
            if stride == last:
                break
        return out


def load_resnet50_weights(path: str | Path, *, frozen_bn: bool) -> dict[str, Tensor]:
    """Read a ResNet-50 state dict (``module.`` prefixes stripped; ``{"state_dict": ...}`` /
    ``{"model": ...}`` wrappers unwrapped; ``fc.*`` dropped) and check it covers every backbone
    tensor with the right shape. Raises ``ValueError`` naming the file and the problem."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: ResNet-50 weight file not found")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(file))
    else:
        sd = torch.load(file, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict):
        raise ValueError(f"{file}: expected a state dict, got {type(sd).__name__}")
    sd = {
        k.removeprefix("module."): v
        for k, v in sd.items()
        if not k.startswith(("fc.", "module.fc."))
    }
    if frozen_bn:
        sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    ref = {
        k: v
        for k, v in torchvision.models.resnet50(weights=None, norm_layer=norm).state_dict().items()
        if not k.startswith("fc.")
    }
    missing = [k for k in ref if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"{file}: not a ResNet-50 state dict, missing {len(missing)} keys e.g. {missing[:3]}"
        )
    for k, v in ref.items():
        if k in sd and tuple(sd[k].shape) != tuple(v.shape):
            raise ValueError(
                f"{file}: '{k}' has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}"
            )
    return {k: sd[k] for k in ref if k in sd}
