"""Batches of the Trainer-based VOIN stages, built from a stream of occluded clips
(:func:`instseg.data.occluded_clips.occluded_clip_stream`); the keys are what
:class:`~instseg.models.inpainting.training_stages.ShapeStage` and :class:`FlowStage` read.
Each batch takes exactly ``batch`` clips of the stream (a resumed run skips
``start_iter * batch`` clips)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from instseg.data.video_occlusion import OccludedClip
from instseg.models.inpainting.flow import clip_flows, fill_object_flow
from instseg.models.inpainting.shape_completion import crop_to_canvas, object_canvas

__all__ = ["flow_batches", "shape_batches"]


def shape_batches(
    clips: Iterator[OccludedClip], batch: int, canvas: int
) -> Iterator[dict[str, Tensor]]:
    """``visible`` (B, T, 1, S, S) float canvases of the visible masks (S = ``canvas``),
    ``amodal`` (B, T, 1, S, S) float 0/1 the amodal masks on the same canvases, ``labels`` (B,)
    zeros (DAVIS has one class)."""
    while True:
        vis, gt = [], []
        for _ in range(batch):
            clip = next(clips)
            v, boxes = object_canvas(clip.visible, size=canvas)
            vis.append(v)
            gt.append(crop_to_canvas(clip.amodal, boxes, size=canvas) > 0.5)
        yield {
            "visible": torch.from_numpy(np.stack(vis))[:, :, None],
            "amodal": torch.from_numpy(np.stack(gt))[:, :, None].float(),
            "labels": torch.zeros(batch, dtype=torch.long),
        }


def flow_batches(clips: Iterator[OccludedClip], batch: int) -> Iterator[dict[str, Tensor]]:
    """The first frame pair of each clip: corrupted and clean frames (B, 3, H, W) in [0, 1],
    ``flow`` the DIS flow of the corrupted frames with the hole filled as at inference
    (:func:`fill_object_flow`), ``gt`` the DIS flow of the clean frames (pseudo ground truth),
    ``visible`` / ``amodal`` (B, 1, H, W) float masks."""

    def t(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    while True:
        items = []
        for _ in range(batch):
            c = next(clips)
            init, _ = clip_flows(c.frames[:2], preset="medium")
            gt, _ = clip_flows(c.clean[:2], preset="medium")
            i = 0
            # the same initial completion as at inference (VOIN.complete_flows, fill_flow=True)
            init = init.copy()
            init[i] = fill_object_flow(init[i], c.holes[i], c.visible[i])
            items.append(
                (
                    c.frames[i],
                    c.frames[i + 1],
                    init[i],
                    gt[i],
                    c.clean[i],
                    c.clean[i + 1],
                    c.visible[i],
                    c.amodal[i],
                )
            )
        cols = [t(np.stack(col)) for col in zip(*items, strict=True)]
        img = [x.permute(0, 3, 1, 2).float() / 255 for x in (cols[0], cols[1], cols[4], cols[5])]
        yield {
            "frame_a": img[0],
            "frame_b": img[1],
            "clean_a": img[2],
            "clean_b": img[3],
            "flow": cols[2].permute(0, 3, 1, 2),
            "gt": cols[3].permute(0, 3, 1, 2),
            "visible": cols[6][:, None].float(),
            "amodal": cols[7][:, None].float(),
        }
