"""Explain panels: what the mask head saw for each top-scoring RoI (survey Fig. 3.7, ch. 4).

``instseg predict ... --explain`` runs the model with ``return_head_outputs=True`` (the head's
per-RoI outputs land in ``Instances.extra``) and calls :func:`save_explanations`, which writes
one PNG per RoI: the image crop of the box, then one heat map per head output, then the final
mask over the crop:

- BCNet (bilayer) heads: occluder contour, occluder mask (GCN-1), occludee contour, occludee
  mask (GCN-2), whichever the variant predicts;
- CPMask (commonality) heads: boundary map, and the affinity map of one pixel (the pixel is
  marked with a white cross; default: the RoI-grid pixel where the mask is most confident, so
  the map shows which pixels that foreground pixel aggregates from);
- any other head: its mask probabilities.

Heat maps use the JET colour map over [0, 1] probabilities (affinity rows are rescaled by their
maximum, they sum to 1 over the grid).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from instseg.structures import Instances

__all__ = ["head_maps", "explain_panel", "save_explanations"]

_TILE = 112
_BILAYER_ORDER = (
    ("occluder_contour", "occluder contour"),
    ("occluder_mask", "occluder mask"),
    ("contour", "occludee contour"),
    ("mask", "occludee mask"),
)


def head_maps(
    extra: dict[str, Tensor],
    index: int,
    label: int,
    *,
    pixel: tuple[int, int] | None = None,
) -> tuple[dict[str, np.ndarray], tuple[int, int] | None]:
    """Per-RoI maps of detection ``index`` from the mask head's outputs (a predictor's
    ``{"mask": inst.mask_logits, **inst.extra}``).

    Args:
        extra: head outputs, each with first dim N: ``"mask"`` (N, K, M, M) logits and, by
            head, ``"contour"``, ``"occluder_mask"``, ``"occluder_contour"`` (bilayer) or
            ``"boundary"`` (N, 1, M, M) logits and ``"affinity"`` (N, S*S, S*S) (CPMask).
        index: the detection; ``label``: its class (picks the channel of class-aware heads).
        pixel: (row, col) on the S x S affinity grid (CPMask); None: where the mask is most
            confident.

    Returns:
        ({title: float32 (h, w) map in [0, 1]} in display order, the affinity pixel used or
        None).
    """
    if "mask" not in extra:
        raise KeyError(f"head outputs need 'mask', got {sorted(extra)}")
    labels = torch.tensor([int(label)])

    def prob(key: str) -> np.ndarray:
        x = extra[key][index : index + 1].float()
        ch = x[:, 0] if x.shape[1] == 1 else x[torch.arange(1), labels.clamp(max=x.shape[1] - 1)]
        return ch[0].sigmoid().numpy()

    if any(k in extra for k in ("occluder_mask", "occluder_contour", "contour")):
        return {title: prob(k) for k, title in _BILAYER_ORDER if k in extra}, None
    maps: dict[str, np.ndarray] = {}
    used = None
    if "boundary" in extra or "affinity" in extra:
        from instseg.models.heads.commonality import commonality_maps

        mask = prob("mask")
        if "affinity" in extra and pixel is None:
            side = int(round(extra["affinity"].shape[-1] ** 0.5))
            small = cv2.resize(mask, (side, side), interpolation=cv2.INTER_AREA)
            pixel = tuple(int(v) for v in np.unravel_index(int(np.argmax(small)), small.shape))
        boundary, aff = commonality_maps(extra, index, pixel=pixel)
        if boundary is not None:
            maps["boundary"] = boundary.numpy()
        if aff is not None:
            a = aff.numpy()
            maps["affinity"] = a / max(float(a.max()), 1e-12)
            used = pixel
        maps["mask"] = mask
        return maps, used
    return {"mask": prob("mask")}, None


def explain_panel(
    crop: np.ndarray,
    maps: dict[str, np.ndarray],
    final_mask: np.ndarray | None,
    *,
    title: str = "",
    pixel: tuple[int, int] | None = None,
    tile: int = _TILE,
) -> np.ndarray:
    """One RGB uint8 panel (tile + 16, tile * (len(maps) + 2), 3): the crop, each map as a JET
    heat map (``pixel`` marked on the ``"affinity"`` tile), the final mask (bool (h, w), the
    crop's size) blended in red over the crop (omitted when None)."""
    base = cv2.resize(np.ascontiguousarray(crop), (tile, tile), interpolation=cv2.INTER_LINEAR)
    tiles = [(title or "RoI", base)]
    for name, m in maps.items():
        heat = np.clip(np.nan_to_num(m.astype(np.float32)), 0.0, 1.0)
        heat = cv2.resize(heat, (tile, tile), interpolation=cv2.INTER_NEAREST)
        rgb = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
        rgb = np.ascontiguousarray(rgb)
        if name == "affinity" and pixel is not None:
            side = m.shape[0]
            cy, cx = ((np.array(pixel) + 0.5) * tile / side).astype(int)
            cv2.drawMarker(rgb, (int(cx), int(cy)), (255, 255, 255), cv2.MARKER_CROSS, 10, 2)
        tiles.append((name, rgb))
    if final_mask is not None:
        fm = cv2.resize(final_mask.astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST)
        over = base.astype(np.float32)
        over[fm > 0] = 0.5 * over[fm > 0] + 0.5 * np.array([255.0, 0.0, 0.0])
        tiles.append(("final mask", over.astype(np.uint8)))
    out = np.full((tile + 16, tile * len(tiles), 3), 255, np.uint8)
    for j, (name, img) in enumerate(tiles):
        out[16:, j * tile : (j + 1) * tile] = img
        cv2.putText(
            out, name[:18], (j * tile + 2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1
        )
    return out


def save_explanations(
    out_dir: str | Path,
    name: str,
    image: np.ndarray,
    inst: Instances,
    *,
    top_k: int = 3,
    pixel: tuple[int, int] | None = None,
    class_names: list[str] | None = None,
) -> list[Path]:
    """Write ``out_dir/<name>_roi<j>.png`` for the ``top_k`` highest-scoring detections.

    Args:
        image: RGB uint8 (H, W, 3), the frame ``inst`` refers to (same size).
        inst: predictions with ``boxes``, ``labels``, ``scores``, ``masks`` (optional),
            ``mask_logits`` and the head's other outputs in ``extra``
            (``model.predict(..., return_head_outputs=True)``).
        pixel: affinity pixel for CPMask heads (see :func:`head_maps`).

    Returns the written paths (empty when there is no detection). Raises ValueError when
    ``inst.mask_logits`` is missing (the model was not run with ``return_head_outputs``).
    """
    if len(inst) == 0:
        return []
    if inst.mask_logits is None:
        raise ValueError(
            "save_explanations needs the mask head outputs (inst.mask_logits and inst.extra; run "
            "the model with return_head_outputs=True)"
        )
    outputs = {"mask": inst.mask_logits, **inst.extra}  # the head's output dict again
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = inst.scores if inst.scores is not None else torch.ones(len(inst))
    order = torch.argsort(scores.float(), descending=True)[:top_k].tolist()
    h, w = image.shape[:2]
    paths = []
    for rank, i in enumerate(order):
        x0, y0, x1, y1 = inst.boxes[i].float().tolist()
        ix0, iy0 = min(max(int(np.floor(x0)), 0), w - 1), min(max(int(np.floor(y0)), 0), h - 1)
        ix1, iy1 = max(min(int(np.ceil(x1)), w), ix0 + 1), max(min(int(np.ceil(y1)), h), iy0 + 1)
        label = int(inst.labels[i])
        maps, used = head_maps(outputs, i, label, pixel=pixel)
        final = None
        if inst.masks is not None:
            final = inst.masks[i, iy0:iy1, ix0:ix1].cpu().numpy().astype(bool)
        cls = class_names[label] if class_names and label < len(class_names) else str(label)
        title = f"{cls} {float(scores[i]):.2f}"
        panel = explain_panel(image[iy0:iy1, ix0:ix1], maps, final, title=title, pixel=used)
        path = out_dir / f"{name}_roi{rank}.png"
        cv2.imwrite(str(path), panel[..., ::-1])
        paths.append(path)
    return paths
