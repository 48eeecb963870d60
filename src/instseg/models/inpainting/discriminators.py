"""VOIN discriminators and GAN / reconstruction losses (paper Sect. 5.4.3, Figs. 5.7 and 5.9).

- :class:`TPatchGAN`: the video discriminator of Free-Form Video Inpainting / STTN: 3D convs
  (kernel 3x5x5, stride 1x2x2, spectral norm, LeakyReLU 0.2), widths c, 2c, 4c, 4c, 4c and a
  last conv to one channel; every output element scores one spatio-temporal patch (hinge loss).
- :class:`MultiClassDiscriminator`: six 3D convs (3x5x5, spectral norm) with the
  spatio-temporal attention module :class:`STAM` after the 4th conv, global average pooling
  and a linear layer to ``K + 1`` logits (K real classes and one "fake" class, index K).
- :class:`STAM` (Fig. 5.9; the paper gives only "two parallel branches for spatial and temporal
  attention, the weighted feature forms a residual connection with the input"). Our inferred
  design, CBAM-like (the cited [41, 125]): for x (B, C, T, H, W)

      spatial  a_s = sigmoid(conv_{1x7x7}([mean_C x, max_C x]))            (B, 1, T, H, W)
      temporal a_t = sigmoid(conv1d_3(ReLU(conv1d_1([mean_HW x, max_HW x])))) (B, 1, T, 1, 1)
      out      = x + x * a_s * a_t

  so ``a_t`` picks the relevant frames and ``a_s`` the discriminative regions in each frame.
- Losses (pure functions): hinge :func:`hinge_d_loss` / :func:`hinge_g_loss`, multi-class
  :func:`multiclass_d_loss` (real clip -> its class, generated clip -> fake class) /
  :func:`multiclass_g_loss` (generated clip -> its real class), :func:`reconstruction_losses`
  (L1 over hole / valid pixels, each normalised by its mask area as in STTN) and
  :class:`PerceptualLoss`, which exists only when the user gives feature weights (VGG16 file).

Choices where the paper is silent: widths (``c`` = 64), the multi-class input is the clip plus
its amodal mask (4 channels), the spatial stride of the first ``downsample`` convs (4 in the
multi-class discriminator so STAM sees a 1/16 map; all 6 in T-PatchGAN).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

__all__ = [
    "TPatchGAN",
    "MultiClassDiscriminator",
    "STAM",
    "hinge_d_loss",
    "hinge_g_loss",
    "multiclass_d_loss",
    "multiclass_g_loss",
    "reconstruction_losses",
    "PerceptualLoss",
]


class TPatchGAN(nn.Module):
    """Temporal PatchGAN. Args: ``in_channels`` (3 frames [+ 1 mask]), ``base_channels`` c,
    ``num_layers`` (default 6, the last has no activation), ``downsample`` how many of the
    first layers have spatial stride 2 (the rest stride 1)."""

    def __init__(
        self,
        *,
        in_channels: int = 4,
        base_channels: int = 64,
        num_layers: int = 6,
        downsample: int = 6,
    ) -> None:
        super().__init__()
        widths = [base_channels * m for m in (1, 2, 4, 4, 4)][: num_layers - 1] + [1]
        widths = _pad_widths(widths, num_layers, base_channels * 4)
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(widths):
            layers.append(_conv3d(cin, cout, stride=2 if i < downsample else 1))
            if i < num_layers - 1:
                layers.append(nn.LeakyReLU(0.2))
            cin = cout
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, C_in, H, W) in [-1, 1] -> patch logits (B, T, 1, h, w)."""
        return self.body(x.transpose(1, 2)).transpose(1, 2)


class STAM(nn.Module):
    """Spatio-temporal attention (see module docstring); (B, C, T, H, W) -> same shape."""

    def __init__(self, *, channels: int, reduction: int = 4, spatial_kernel: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        p = spatial_kernel // 2
        self.spatial = nn.Conv3d(2, 1, (1, spatial_kernel, spatial_kernel), padding=(0, p, p))
        self.temporal = nn.Sequential(
            nn.Conv1d(2 * channels, hidden, 1),
            nn.ReLU(),
            nn.Conv1d(hidden, 1, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        a_s, a_t = self.attention(x)
        return x + x * a_s * a_t

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, T, H, W) -> spatial (B, 1, T, H, W) and temporal (B, 1, T, 1, 1) weights
        in (0, 1)."""
        s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        a_s = torch.sigmoid(self.spatial(s))
        z = torch.cat([x.mean((3, 4)), x.amax((3, 4))], dim=1)  # (B, 2C, T)
        a_t = torch.sigmoid(self.temporal(z))[..., None, None]  # (B, 1, T, 1, 1)
        return a_s, a_t


class MultiClassDiscriminator(nn.Module):
    """Six 3x5x5 3D convs, STAM after the 4th, global pooling, linear to ``num_classes + 1``.

    Args:
        num_classes: K real classes; logit index K is "fake".
        in_channels: 3 (frames) + 1 (amodal mask) by default.
        base_channels: c; widths c, 2c, 4c, 4c, 4c, 4c.
        downsample: number of leading convs with spatial stride 2.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 4,
        base_channels: int = 64,
        downsample: int = 4,
        stam_after: int = 4,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        widths = [base_channels * m for m in (1, 2, 4, 4, 4, 4)]
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(widths):
            layers += [_conv3d(cin, cout, stride=2 if i < downsample else 1), nn.LeakyReLU(0.2)]
            if i + 1 == stam_after:
                layers.append(STAM(channels=cout))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.classifier = spectral_norm(nn.Linear(cin, num_classes + 1))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, C_in, H, W) in [-1, 1] -> logits (B, num_classes + 1)."""
        f = self.body(x.transpose(1, 2))
        return self.classifier(f.mean((2, 3, 4)))


# ------------------------------------------------------------------------------------- losses
def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``; any shapes -> scalar."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """``-mean(D(G(z)))``; any shape -> scalar."""
    return -fake_logits.mean()


def multiclass_d_loss(real_logits: Tensor, fake_logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy: real clips (B, K+1) -> ``labels`` (B,) in [0, K), generated -> K."""
    k = real_logits.shape[1] - 1
    _check_labels(labels, k)
    fake_target = torch.full_like(labels, k)
    return F.cross_entropy(real_logits, labels) + F.cross_entropy(fake_logits, fake_target)


def multiclass_g_loss(fake_logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of generated clips (B, K+1) towards their real class ``labels`` (B,)."""
    _check_labels(labels, fake_logits.shape[1] - 1)
    return F.cross_entropy(fake_logits, labels)


def reconstruction_losses(pred: Tensor, target: Tensor, hole: Tensor) -> dict[str, Tensor]:
    """L1 inside and outside the hole, each averaged over its own pixels.

    Args:
        pred / target: (B, T, 3, H, W); hole: (B, T, 1, H, W) {0, 1}.
    Returns:
        ``{"l1_hole": ..., "l1_valid": ...}`` scalars (0 when a region is empty).
    """
    hole = hole.to(pred.dtype).expand_as(pred)
    err = (pred - target).abs()
    return {
        "l1_hole": (err * hole).sum() / hole.sum().clamp_min(1.0),
        "l1_valid": (err * (1 - hole)).sum() / (1 - hole).sum().clamp_min(1.0),
    }


class PerceptualLoss(nn.Module):
    """L1 between frozen features of ``pred`` and ``target``, summed over ``layers``.

    Args:
        features: an ``nn.Sequential`` feature extractor (e.g. VGG16 ``features``), frozen here.
        layers: indices into ``features`` whose outputs are compared.
        layer_weights: one weight per layer (default 1).
    Inputs are (N, 3, H, W) in [-1, 1], mapped to ImageNet normalisation.
    """

    def __init__(
        self,
        *,
        features: nn.Sequential,
        layers: Sequence[int],
        layer_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not layers or max(layers) >= len(features):
            raise ValueError(f"layers {list(layers)} must index the {len(features)} features")
        self.features = features.eval().requires_grad_(False)
        self.layers = tuple(sorted(layers))
        self.layer_weights = tuple(layer_weights or [1.0] * len(layers))
        if len(self.layer_weights) != len(self.layers):
            raise ValueError(f"{len(self.layer_weights)} layer weights for {len(layers)} layers")
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    @classmethod
    def from_vgg16_file(
        cls, path: str | Path, *, layers: Sequence[int] = (3, 8, 15, 22)
    ) -> PerceptualLoss:
        """VGG16 relu1_2..relu4_3 from a torchvision state dict the user provides (full model
        or ``features.*`` keys). Nothing is downloaded; a missing file raises."""
        from torchvision.models import vgg16

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: VGG16 weights not found (perceptual loss is optional)")
        state = torch.load(p, map_location="cpu", weights_only=True)
        feats = vgg16(weights=None).features[: max(layers) + 1]
        sub = {
            k.removeprefix("features."): v
            for k, v in state.items()
            if k.startswith("features.") or k[0].isdigit()
        }
        sub = {k: v for k, v in sub.items() if int(k.split(".")[0]) < len(feats)}
        try:
            feats.load_state_dict(sub)
        except RuntimeError as e:
            raise ValueError(f"{p}: not a torchvision VGG16 state dict ({e})") from e
        return cls(features=feats, layers=layers)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """(N, 3, H, W) x2 in [-1, 1] -> scalar."""
        x = ((pred + 1) / 2 - self.mean) / self.std
        y = ((target + 1) / 2 - self.mean) / self.std
        loss = pred.new_zeros(())
        wi = dict(zip(self.layers, self.layer_weights, strict=True))
        for i, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if i in wi:
                loss = loss + wi[i] * (x - y.detach()).abs().mean()
            if i >= self.layers[-1]:
                break
        return loss


# ------------------------------------------------------------------------------------ helpers
def _conv3d(cin: int, cout: int, *, stride: int) -> nn.Module:
    return spectral_norm(
        nn.Conv3d(cin, cout, (3, 5, 5), stride=(1, stride, stride), padding=(1, 2, 2))
    )


def _pad_widths(widths: list[int], n: int, fill: int) -> list[int]:
    """Widths for ``n`` layers: the listed ones, ``fill`` in between, 1 for the last layer."""
    body = widths[:-1] + [fill] * (n - len(widths))
    return body[: n - 1] + [1]


def _check_labels(labels: Tensor, k: int) -> None:
    if labels.numel() and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"class labels must be in [0, {k}), got {labels.tolist()}")
