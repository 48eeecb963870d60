"""Occlusion-aware amodal shape completion of VOIN (paper Sect. 5.4.1, Fig. 5.6(a), Eqs. 5.9-5.10).

Input: the visible masks of one object over a clip, cropped around the object onto a square
``canvas`` (:func:`object_canvas`), and its class. Output: amodal mask logits on the canvas,
pasted back with :func:`paste_canvas`. Pipeline::

    [M_vis, x, y]  --conv s2, conv s2-->  F (B*T, D, S/4, S/4)      patch embedding (CoordConv)
    8 x { F += f_c([SelfAtt_i(F)]_i)  ;  F += FFN(F) }               Eq. 5.9, pre-norm layers
    frame-level shape decoder: 2 x (up x2, conv 3x3)  -> (B*T, D', S, S)
    E_cls * M_vis  (class embedding times the visible mask)          (B*T, D', S, S)
    fusion convs on [decoder, E_cls * M_vis, M_vis] -> amodal logits (B, T, 1, S, S)

Attention (Eq. 5.10 with the usual placement of the scale, ``softmax(Q K^T / sqrt(d_k)) V``;
the printed equation divides after the softmax, a typo): head ``i`` takes ``D / k`` channels
of the 1x1-conv Q/K/V embeddings and cuts them into ``r_i x r_i`` patches of the *whole clip*,
``T x S/r_i x S/r_i`` tokens of dimension ``(D / k) r_i^2``, so one layer attends over near and
distant frames at several patch scales (STTN-style multi-scale heads; head ``i`` uses
``patch_sizes[i % len(patch_sizes)]``). ``f_c`` is a 3x3 conv merging the heads.

Choices where the paper is silent (documented): canvas 64 with patch sizes 8 and 16 canvas
pixels (2 and 4 feature pixels), D = 128, 4 heads, FFN ratio 2, two x/y coordinate channels as
the positional signal (any canvas size works), LayerNorm2d pre-norm, and the canvas crop: one
square side per clip (``context`` x the largest visible box side, so the hidden part fits) and a
per-frame centre at the visible box centre (interpolated over frames where nothing is visible).
Training is self-supervised (Sect. 5.4.4): occlusions are synthesised on modal masks
(:mod:`instseg.data.video_occlusion`), the modal mask is the amodal target, and the loss is
:func:`shape_completion_loss` (BCE + optional dice).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.layers.non_local import LayerNorm2d

__all__ = [
    "AmodalShapeCompletion",
    "MultiScaleAttention",
    "shape_completion_loss",
    "mask_iou",
    "object_canvas",
    "crop_to_canvas",
    "paste_canvas",
]

_STRIDE = 4  # patch-embedding stride (canvas pixels per feature pixel)


class AmodalShapeCompletion(nn.Module):
    """Spatio-temporal transformer shape completion.

    Args:
        num_classes: K object classes for the class embedding (0: class-agnostic, no embedding).
        embed_dim: D, transformer width (divisible by ``num_heads``).
        num_layers: transformer layers (8 in the paper).
        num_heads: k.
        patch_sizes: patch sizes in canvas pixels (multiples of 4; the canvas must be a multiple
            of each).
        mlp_ratio: FFN width factor.
        decoder_dim: D', width of the shape decoder and the class embedding.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int = 128,
        num_layers: int = 8,
        num_heads: int = 4,
        patch_sizes: tuple[int, ...] = (8, 16),
        mlp_ratio: float = 2.0,
        decoder_dim: int = 64,
    ) -> None:
        super().__init__()
        if any(p % _STRIDE for p in patch_sizes) or not patch_sizes:
            raise ValueError(f"patch_sizes must be multiples of {_STRIDE}, got {patch_sizes}")
        self.num_classes = num_classes
        self.patch_sizes = tuple(patch_sizes)
        d, dd = embed_dim, decoder_dim
        self.embed = nn.Sequential(
            nn.Conv2d(3, d // 2, 3, 2, 1), nn.GELU(), nn.Conv2d(d // 2, d, 3, 2, 1)
        )
        feat_patches = tuple(p // _STRIDE for p in patch_sizes)
        self.layers = nn.ModuleList(
            [
                _TransformerLayer(
                    dim=d, num_heads=num_heads, patch_sizes=feat_patches, mlp_ratio=mlp_ratio
                )
                for _ in range(num_layers)
            ]
        )
        self.norm = LayerNorm2d(d)
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="bilinear"),
            nn.Conv2d(d, dd, 3, 1, 1),
            nn.GELU(),
            nn.Upsample(scale_factor=2.0, mode="bilinear"),
            nn.Conv2d(dd, dd, 3, 1, 1),
            nn.GELU(),
        )
        self.class_embed = nn.Embedding(num_classes, dd) if num_classes > 0 else None
        fuse_in = dd + 1 + (dd if num_classes > 0 else 0)
        self.fusion = nn.Sequential(
            nn.Conv2d(fuse_in, dd, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(dd, dd, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(dd, 1, 1),
        )

    def forward(self, visible: Tensor, labels: Tensor | None = None) -> Tensor:
        """Amodal logits.

        Args:
            visible: (B, T, 1, S, S) float {0, 1} visible masks on the canvas.
            labels: (B,) long class ids in [0, K) (required iff ``num_classes > 0``).
        Returns:
            (B, T, 1, S, S) float logits of the amodal mask.
        """
        b, t, s = self._check(visible, labels)
        v = visible.flatten(0, 1).float()
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, s, device=v.device),
            torch.linspace(-1, 1, s, device=v.device),
            indexing="ij",
        )
        x = self.embed(torch.cat([v, xs.expand_as(v), ys.expand_as(v)], dim=1))
        for layer in self.layers:
            x = layer(x, num_frames=t)
        x = self.decoder(self.norm(x))
        parts = [x, v]
        if self.class_embed is not None:
            emb = self.class_embed(labels).repeat_interleave(t, dim=0)[..., None, None]
            parts.append(emb * v)  # class embedding multiplied by the visible mask
        return self.fusion(torch.cat(parts, dim=1)).unflatten(0, (b, t))

    def _check(self, visible: Tensor, labels: Tensor | None) -> tuple[int, int, int]:
        if visible.ndim != 5 or visible.shape[2] != 1 or visible.shape[3] != visible.shape[4]:
            raise ValueError(f"visible must be (B, T, 1, S, S), got {tuple(visible.shape)}")
        b, t, _, s, _ = visible.shape
        bad = [p for p in self.patch_sizes if s % p]
        if bad:
            raise ValueError(f"canvas size {s} is not a multiple of patch sizes {bad}")
        if self.class_embed is not None:
            if labels is None or labels.shape != (b,):
                raise ValueError(f"labels (B,) = ({b},) needed with num_classes > 0")
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise ValueError(
                    f"labels must be in [0, {self.num_classes}), got {labels.tolist()}"
                )
        return b, t, s


class MultiScaleAttention(nn.Module):
    """Eqs. 5.9-5.10: multi-head self-attention over clip patches, one patch size per head.

    Args: ``dim`` D, ``num_heads`` k, ``patch_sizes`` in feature pixels (head i uses
    ``patch_sizes[i % len]``). Input / output (B*T, D, h, w) with ``num_frames`` = T.
    """

    def __init__(self, *, dim: int, num_heads: int, patch_sizes: tuple[int, ...]) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_patch = [patch_sizes[i % len(patch_sizes)] for i in range(num_heads)]
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.merge = nn.Conv2d(dim, dim, 3, 1, 1)  # f_c

    def forward(self, x: Tensor, *, num_frames: int) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=1)
        outs = []
        for i, (qi, ki, vi) in enumerate(
            zip(*(t.chunk(self.num_heads, dim=1) for t in (q, k, v)), strict=True)
        ):
            r = self.head_patch[i]
            tokens = [_to_tokens(z, r, num_frames) for z in (qi, ki, vi)]
            att = F.scaled_dot_product_attention(*tokens)  # softmax(QK^T / sqrt(d_k)) V
            outs.append(_from_tokens(att, r, num_frames, qi.shape))
        return self.merge(torch.cat(outs, dim=1))


class _TransformerLayer(nn.Module):
    def __init__(
        self, *, dim: int, num_heads: int, patch_sizes: tuple[int, ...], mlp_ratio: float
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1, self.norm2 = LayerNorm2d(dim), LayerNorm2d(dim)
        self.attn = MultiScaleAttention(dim=dim, num_heads=num_heads, patch_sizes=patch_sizes)
        self.ffn = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, 1, 1), nn.GELU(), nn.Conv2d(hidden, dim, 3, 1, 1)
        )

    def forward(self, x: Tensor, *, num_frames: int) -> Tensor:
        x = x + self.attn(self.norm1(x), num_frames=num_frames)
        return x + self.ffn(self.norm2(x))


# ------------------------------------------------------------------------------- loss / metric
def shape_completion_loss(
    logits: Tensor, amodal: Tensor, *, dice_weight: float = 1.0
) -> dict[str, Tensor]:
    """BCE (mean over pixels) and soft dice (per clip, averaged) on the amodal mask.

    logits / amodal: (B, T, 1, S, S). Returns ``{"bce": ..., "dice": ...}`` (``dice`` is
    already multiplied by ``dice_weight``; omitted when it is 0).
    """
    target = amodal.to(logits.dtype)
    out = {"bce": F.binary_cross_entropy_with_logits(logits, target)}
    if dice_weight:
        p = torch.sigmoid(logits).flatten(1)
        g = target.flatten(1)
        dice = 1 - (2 * (p * g).sum(1) + 1) / (p.sum(1) + g.sum(1) + 1)
        out["dice"] = dice_weight * dice.mean()
    return out


def mask_iou(pred: Tensor, gt: Tensor, region: Tensor | None = None) -> float:
    """IoU of two boolean masks (any equal shapes), restricted to ``region`` when given (e.g.
    the occluded part). NaN when the union is empty."""
    pred, gt = pred.bool(), gt.bool()
    if region is not None:
        pred, gt = pred & region.bool(), gt & region.bool()
    union = (pred | gt).sum().item()
    return float((pred & gt).sum().item() / union) if union else float("nan")


# -------------------------------------------------------------------------- canvas crop/paste
def object_canvas(
    visible: np.ndarray, *, size: int = 64, context: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Crop square boxes around the object of ``visible`` (T, H, W) bool (see module docstring).

    Returns ``canvas`` (T, size, size) float32 in [0, 1] (bilinear) and ``boxes`` (T, 4) float
    ``(x0, y0, x1, y1)`` in continuous pixel coordinates (pixel i spans [i, i+1)); boxes may
    extend beyond the image (zeros there).
    """
    visible = np.asarray(visible, bool)
    if visible.ndim != 3:
        raise ValueError(f"visible must be (T, H, W), got {visible.shape}")
    t_len = len(visible)
    present = visible.any((1, 2))
    if not present.any():
        raise ValueError("object_canvas: the object is not visible in any frame")
    centres = np.full((t_len, 2), np.nan)
    side = 1.0
    for t in np.nonzero(present)[0]:
        ys, xs = np.nonzero(visible[t])
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        centres[t] = (x0 + x1) / 2, (y0 + y1) / 2
        side = max(side, x1 - x0, y1 - y0)
    idx = np.arange(t_len)
    for d in range(2):
        centres[:, d] = np.interp(idx, idx[present], centres[present, d])
    half = context * side / 2
    boxes = np.concatenate([centres - half, centres + half], axis=1).astype(np.float32)
    return crop_to_canvas(visible, boxes, size=size), boxes


def crop_to_canvas(masks: np.ndarray, boxes: np.ndarray, *, size: int) -> np.ndarray:
    """Bilinear crops of ``masks`` (T, H, W) bool/float with ``boxes`` (T, 4) from
    :func:`object_canvas` -> (T, size, size) float32 (e.g. the amodal target of a training clip
    on the canvas of its visible masks)."""
    m = torch.from_numpy(np.asarray(masks, np.float32))[:, None]
    return _crop(m, torch.from_numpy(np.asarray(boxes, np.float32)), size)[:, 0].numpy()


def paste_canvas(
    logits: np.ndarray | Tensor, boxes: np.ndarray, hw: tuple[int, int], *, outside: float = -20.0
) -> Tensor:
    """Map canvas logits (T, S, S) back to the image: (T, H, W) float tensor; pixels outside
    a frame's box get ``outside``."""
    lg = torch.as_tensor(logits).float()
    t_len, s = lg.shape[0], lg.shape[-1]
    h, w = hw
    bx = torch.as_tensor(boxes, dtype=torch.float32, device=lg.device)
    xs = torch.arange(w, dtype=torch.float32, device=lg.device) + 0.5
    ys = torch.arange(h, dtype=torch.float32, device=lg.device) + 0.5
    gx = 2 * (xs[None] - bx[:, :1]) / (bx[:, 2:3] - bx[:, :1]) - 1  # (T, W)
    gy = 2 * (ys[None] - bx[:, 1:2]) / (bx[:, 3:4] - bx[:, 1:2]) - 1  # (T, H)
    grid = torch.stack(
        [gx[:, None, :].expand(t_len, h, w), gy[:, :, None].expand(t_len, h, w)], dim=-1
    )
    out = F.grid_sample(
        lg.reshape(t_len, 1, s, s) - outside,
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return out[:, 0] + outside


def _crop(img: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Bilinear crops: img (T, C, H, W), boxes (T, 4) continuous xyxy -> (T, C, size, size)."""
    t_len, _, h, w = img.shape
    u = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # (S,)
    x = boxes[:, :1] + u[None] * (boxes[:, 2:3] - boxes[:, :1])  # (T, S) continuous coords
    y = boxes[:, 1:2] + u[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    grid = torch.stack(
        [
            (2 * x / w - 1)[:, None, :].expand(t_len, size, size),
            (2 * y / h - 1)[:, :, None].expand(t_len, size, size),
        ],
        dim=-1,
    )
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _to_tokens(z: Tensor, r: int, t: int) -> Tensor:
    """(B*T, c, h, w) -> (B, T * h/r * w/r, c * r * r)."""
    bt, c, h, w = z.shape
    z = z.reshape(bt // t, t, c, h // r, r, w // r, r)
    z = z.permute(0, 1, 3, 5, 2, 4, 6)  # B, T, h/r, w/r, c, r, r
    return z.reshape(bt // t, t * (h // r) * (w // r), c * r * r)


def _from_tokens(z: Tensor, r: int, t: int, shape: torch.Size) -> Tensor:
    """Inverse of :func:`_to_tokens` back to ``shape`` (B*T, c, h, w)."""
    bt, c, h, w = shape
    z = z.reshape(bt // t, t, h // r, w // r, c, r, r).permute(0, 1, 4, 2, 5, 3, 6)
    return z.reshape(bt, c, h, w)
