"""Inpainting metrics (paper Table 5.8): PSNR, SSIM, flow EPE, and LPIPS from user weights.

Definitions (per frame, uint8 RGB, ``data_range=255``, scikit-image):

- frame PSNR: ``skimage.metrics.peak_signal_noise_ratio`` on the whole frame.
- hole PSNR: the same formula over the hole pixels only (all channels), i.e. PSNR of
  ``gt[hole]`` vs ``pred[hole]``.
- frame SSIM: ``structural_similarity(..., channel_axis=-1)`` mean SSIM (skimage defaults:
  7x7 uniform window; skimage averages the map without a 3-pixel border).
- hole SSIM: the full-frame SSIM map (same call, ``full=True``), averaged over channels, then
  averaged over the hole pixels (border included).
- A perfect frame has infinite PSNR; per-frame values are capped at :data:`PSNR_CAP` dB before
  averaging (documented, the cap is stored in the results). Frames with an empty hole get NaN
  hole metrics and are left out of the hole averages (counted in ``empty_hole_frames``).
- Averages are the mean of per-frame values over all frames (not per sequence first).

LPIPS: the ``lpips`` package is not installed and weights are never downloaded. :class:`LPIPS`
builds the metric from two files the user provides (a torchvision AlexNet/VGG16 state dict and
the LPIPS linear-layer state dict, e.g. ``alex.pth`` from the LPIPS release); without them it
raises :class:`LPIPSUnavailable`. Random weights are never used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from instseg.utils.image import IMAGE_EXTENSIONS, read_image

__all__ = [
    "PSNR_CAP",
    "psnr",
    "ssim",
    "frame_metrics",
    "flow_epe",
    "InpaintingEvaluator",
    "evaluate_inpainting",
    "LPIPSUnavailable",
    "LPIPS",
]

logger = logging.getLogger(__name__)
PSNR_CAP = 100.0


def psnr(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, *, data_range: float = 255.0
) -> float:
    """PSNR in dB of ``pred`` vs ``gt`` ((H, W[, C])), over ``mask`` (H, W) pixels if given.
    Returns ``inf`` for a perfect match and NaN for an empty mask."""
    pred, gt = _pair(pred, gt)
    if mask is not None:
        mask = _mask(mask, gt)
        if not mask.any():
            return float("nan")
        pred, gt = pred[mask], gt[mask]
    if np.array_equal(pred, gt):
        return float("inf")
    return float(peak_signal_noise_ratio(gt, pred, data_range=data_range))


def ssim(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, *, data_range: float = 255.0
) -> float:
    """SSIM of ``pred`` vs ``gt`` ((H, W[, C])); with ``mask`` the mean of the SSIM map over
    the mask pixels (NaN for an empty mask), otherwise skimage's mean SSIM."""
    pred, gt = _pair(pred, gt)
    kw: dict[str, Any] = {"data_range": data_range}
    if gt.ndim == 3:
        kw["channel_axis"] = -1
    if mask is None:
        return float(structural_similarity(gt, pred, **kw))
    mask = _mask(mask, gt)
    if not mask.any():
        return float("nan")
    _, smap = structural_similarity(gt, pred, full=True, **kw)
    if smap.ndim == 3:
        smap = smap.mean(-1)
    return float(smap[mask].mean())


def frame_metrics(pred: np.ndarray, gt: np.ndarray, hole: np.ndarray) -> dict[str, float]:
    """``hole_psnr``, ``hole_ssim``, ``frame_psnr``, ``frame_ssim`` for one frame (uncapped)."""
    pred, gt = _pair(pred, gt)
    kw: dict[str, Any] = {"data_range": 255.0, "full": True}
    if gt.ndim == 3:
        kw["channel_axis"] = -1
    mssim, smap = structural_similarity(gt, pred, **kw)  # one SSIM pass for both values
    smap = smap.mean(-1) if smap.ndim == 3 else smap
    hole = _mask(hole, gt)
    return {
        "hole_psnr": psnr(pred, gt, hole),
        "hole_ssim": float(smap[hole].mean()) if hole.any() else float("nan"),
        "frame_psnr": psnr(pred, gt),
        "frame_ssim": float(mssim),
    }


class InpaintingEvaluator:
    """reset / add / evaluate over frames; ``add(key, pred, gt, hole)`` with ``key`` like
    ``"<sequence>/<frame>"`` (the part before the last '/' groups frames per sequence)."""

    METRICS = ("hole_psnr", "hole_ssim", "frame_psnr", "frame_ssim")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._rows: list[dict[str, Any]] = []

    def add(self, key: str, pred: np.ndarray, gt: np.ndarray, hole: np.ndarray) -> None:
        self._rows.append({"key": key, **frame_metrics(pred, gt, hole)})

    def evaluate(self) -> dict[str, Any]:
        """``{"num_frames", "empty_hole_frames", "psnr_cap", "mean": {metric: v},
        "per_sequence": {seq: {metric: v}}, "per_frame": [row, ...]}``."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in self._rows:
            groups.setdefault(r["key"].rpartition("/")[0], []).append(r)
        return {
            "num_frames": len(self._rows),
            "empty_hole_frames": sum(math.isnan(r["hole_psnr"]) for r in self._rows),
            "psnr_cap": PSNR_CAP,
            "mean": _means(self._rows),
            "per_sequence": {k: _means(v) for k, v in sorted(groups.items())},
            "per_frame": [{k: _json_float(v) for k, v in r.items()} for r in self._rows],
        }


def evaluate_inpainting(
    pred_dir: str | Path, gt_dir: str | Path, holes_dir: str | Path
) -> dict[str, Any]:
    """Score every image under ``gt_dir`` against the file with the same relative path (any
    image extension) under ``pred_dir``, with the hole mask (> 127 = hole) under ``holes_dir``.

    Layouts like ``<dir>/<sequence>/%05d.png`` (what :func:`make_eval_split` writes for
    ``gt``/``holes``) or flat folders both work. Returns :meth:`InpaintingEvaluator.evaluate`.
    """
    gt_files = _index(gt_dir)
    if not gt_files:
        raise FileNotFoundError(f"{gt_dir}: no images found")
    pred_files, hole_files = _index(pred_dir), _index(holes_dir)
    for name, files, d in (("prediction", pred_files, pred_dir), ("hole", hole_files, holes_dir)):
        missing = sorted(set(gt_files) - set(files))
        if missing:
            raise FileNotFoundError(
                f"{d}: {len(missing)} {name} files missing, e.g. "
                f"'{missing[0]}' (needed for {gt_files[missing[0]]})"
            )
    ev = InpaintingEvaluator()
    for key in sorted(gt_files):
        gt = read_image(gt_files[key])
        pred = read_image(pred_files[key])
        if pred.shape != gt.shape:
            raise ValueError(
                f"{pred_files[key]}: size {pred.shape[:2]} != ground truth "
                f"{gt.shape[:2]} ({gt_files[key]})"
            )
        with Image.open(hole_files[key]) as im:
            hole = np.asarray(im.convert("L")) > 127
        if hole.shape != gt.shape[:2]:
            raise ValueError(f"{hole_files[key]}: mask size {hole.shape} != {gt.shape[:2]}")
        ev.add(key, pred, gt, hole)
    return ev.evaluate()


class LPIPSUnavailable(RuntimeError):
    """LPIPS needs pretrained backbone + linear-layer weights that are not available here."""


_LPIPS_LAYERS = {  # torchvision ``features`` slices ending at the LPIPS taps, and channels
    "alex": ([(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)], [64, 192, 384, 256, 256]),
    "vgg": ([(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)], [64, 128, 256, 512, 512]),
}


class LPIPS(nn.Module):
    """LPIPS distance (Zhang et al. 2018) from local weight files.

    ``backbone_weights``: torchvision ``alexnet`` / ``vgg16`` state dict (ImageNet);
    ``linear_weights``: LPIPS linear layers, keys ``lin{i}.model.1.weight`` or
    ``lin{i}.weight`` with shape (1, C_i, 1, 1). Missing files raise :class:`LPIPSUnavailable`.
    ``forward(pred, gt, mask=None)`` takes (N, 3, H, W) in [0, 1] and returns (N,) distances;
    with ``mask`` (N, 1, H, W) the per-layer maps are averaged over the mask (resized per layer).
    """

    _SHIFT = (-0.030, -0.088, -0.188)
    _SCALE = (0.458, 0.448, 0.450)

    def __init__(
        self,
        *,
        net: Literal["alex", "vgg"] = "alex",
        backbone_weights: str | Path | None = None,
        linear_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if net not in _LPIPS_LAYERS:
            raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
        for what, p in (("backbone", backbone_weights), ("linear-layer", linear_weights)):
            if p is None or not Path(p).is_file():
                raise LPIPSUnavailable(
                    f"LPIPS ({net}) needs a local {what} weights file"
                    + (f"; '{p}' does not exist" if p is not None else "")
                    + ". The 'lpips' package is not installed and weights are never "
                    "downloaded; pass backbone_weights=<torchvision {} state dict> and "
                    "linear_weights=<LPIPS {}.pth>, or report PSNR/SSIM only.".format(
                        "alexnet" if net == "alex" else "vgg16", net
                    )
                )
        from torchvision.models import alexnet, vgg16

        features = (alexnet if net == "alex" else vgg16)(weights=None).features
        state = torch.load(backbone_weights, map_location="cpu", weights_only=True)
        feat_state = {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
        }
        features.load_state_dict(feat_state)
        spans, chans = _LPIPS_LAYERS[net]
        self.slices = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in spans)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in chans)
        lin_state = torch.load(linear_weights, map_location="cpu", weights_only=True)
        for i, lin in enumerate(self.lins):
            key = next(
                (k for k in (f"lin{i}.model.1.weight", f"lin{i}.weight") if k in lin_state), None
            )
            if key is None:
                raise LPIPSUnavailable(f"{linear_weights}: no 'lin{i}' weight in the file")
            lin.weight.data.copy_(lin_state[key])
        self.register_buffer("shift", torch.tensor(self._SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(self._SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def forward(
        self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x, y = ((t * 2 - 1 - self.shift) / self.scale for t in (pred, gt))
        total = pred.new_zeros(pred.shape[0])
        for sl, lin in zip(self.slices, self.lins, strict=False):
            x, y = sl(x), sl(y)
            d = lin((_unit(x) - _unit(y)) ** 2)  # (N, 1, h, w)
            if mask is None:
                total = total + d.mean((1, 2, 3))
            else:
                m = nn.functional.interpolate(mask.float(), size=d.shape[-2:], mode="area")
                total = total + (d * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1e-8)
        return total


# ----------------------------------------------------------------------------------- helpers
def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
    return pred, gt


def _mask(mask: np.ndarray, gt: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, bool)
    if mask.shape != gt.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} != image size {gt.shape[:2]}")
    return mask


def _means(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    rows = list(rows)
    out = {}
    for m in InpaintingEvaluator.METRICS:
        vals = np.array([r[m] for r in rows], np.float64)
        vals = np.minimum(vals[~np.isnan(vals)], PSNR_CAP)
        out[m] = float(vals.mean()) if vals.size else float("nan")
    return out


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else PSNR_CAP
    return v


def _index(root: str | Path) -> dict[str, Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found")
    out: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            key = p.relative_to(root).with_suffix("").as_posix()
            if key in out:
                logger.warning("%s: duplicate of %s (different extension), ignored", p, out[key])
                continue
            out[key] = p
    return out


def flow_epe(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None = None,
) -> float:
    """Mean end-point error ``||pred - gt||_2`` over pixels (optionally only where ``mask``).

    ``pred``/``gt``: (..., H, W, 2) numpy or (..., 2, H, W) torch; ``mask``: (..., H, W) bool.
    Returns NaN when the mask is empty.
    """
    if isinstance(pred, torch.Tensor):
        err = torch.linalg.vector_norm(pred.float() - torch.as_tensor(gt).float(), dim=-3)
        err = err.detach().cpu().numpy()
    else:
        err = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    if mask is not None:
        m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, bool)
        err = err[np.broadcast_to(m, err.shape)]
    return float(err.mean()) if err.size else float("nan")
