"""Overlay drawing: masks, boxes, labels and scores in distinct colours (OpenCV)."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
import torch

from instseg.structures import Instances

__all__ = ["color_for", "draw_instances", "heatmap"]


def color_for(index: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour for an index (golden-ratio hue steps)."""
    h = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_instances(
    image: np.ndarray,
    inst: Instances,
    *,
    class_names: list[str] | None = None,
    score_thresh: float = 0.3,
    alpha: float = 0.5,
    color_by: str = "instance",
) -> np.ndarray:
    """Draw ``inst`` on an RGB uint8 (H, W, 3) image and return a new image.

    ``color_by``: "instance" (one colour per detection), "track" (by ``track_ids``) or "class".
    Masks must be at the image's size.
    """
    out = image.astype(np.float32).copy()
    keep = torch.ones(len(inst), dtype=torch.bool)
    if inst.scores is not None:
        keep = inst.scores >= score_thresh
    idx = torch.nonzero(keep).flatten().tolist()
    if inst.scores is not None:
        idx.sort(key=lambda i: float(inst.scores[i]))  # draw confident ones last (on top)
    labels_txt = []
    for rank, i in enumerate(idx):
        key = rank
        if color_by == "track" and inst.track_ids is not None:
            key = int(inst.track_ids[i])
        elif color_by == "class":
            key = int(inst.labels[i])
        color = np.array(color_for(key), dtype=np.float32)
        if inst.masks is not None:
            m = inst.masks[i].cpu().numpy().astype(bool)
            out[m] = out[m] * (1 - alpha) + color * alpha
            contours, _ = cv2.findContours(
                m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(out, contours, -1, color.tolist(), 1, lineType=cv2.LINE_AA)
        x0, y0, x1, y1 = [int(round(float(v))) for v in inst.boxes[i]]
        cv2.rectangle(out, (x0, y0), (x1, y1), color.tolist(), 1, lineType=cv2.LINE_AA)
        lab = int(inst.labels[i])
        text = class_names[lab] if class_names and 0 <= lab < len(class_names) else str(lab)
        if inst.track_ids is not None:
            text = f"#{int(inst.track_ids[i])} {text}"
        if inst.scores is not None:
            text += f" {float(inst.scores[i]):.2f}"
        labels_txt.append((text, (x0, max(y0 - 3, 10)), color))
    out = np.clip(out, 0, 255).astype(np.uint8)
    for text, org, color in labels_txt:
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        x, y = org
        cv2.rectangle(out, (x, y - th - 2), (x + tw + 2, y + 2), color.tolist(), -1)
        cv2.putText(out, text, (x + 1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def heatmap(prob: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """(h, w) values in [0, 1] -> RGB uint8 heat map (JET), optionally resized to (H, W)."""
    p = np.clip(np.asarray(prob, dtype=np.float32), 0, 1)
    img = cv2.applyColorMap((p * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    if size is not None:
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(img)
