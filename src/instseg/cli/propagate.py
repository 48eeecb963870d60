"""``instseg propagate``: semi-supervised video object segmentation, i.e. propagation of given
first-frame masks (no video training, no weights needed)::

    instseg propagate --source FRAME_DIR --init-masks MASK_DIR --out DIR
                      [--weights src/instseg/weights/propagation_default.pt]

``MASK_DIR`` holds the first frame's objects as an indexed PNG (DAVIS style, 0 = background,
k = object k; 0/255 binary PNGs are object 1), named like the first frame (else the first PNG
in sorted order; a single PNG file also works). The objects are propagated with label-valued
instance prototypes (:mod:`instseg.models.video.mask_propagation`, run by
:mod:`instseg.inference.mask_propagation`), or with ``--method labelprop`` by the standard
label-propagation protocol (:mod:`instseg.models.video.mask_propagation_labelprop`);
``DIR/masks/<frame>.png`` gets one indexed PNG per input frame and ``DIR/vis.mp4`` the
overlay. Features: ImageNet EfficientNet-Lite0 by default; ``--weights`` takes a learned
propagation embedding (the shipped ``propagation_default.pt``, better) or a trained model whose
fine-tuned backbone is used.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instseg.cli.options import chain_first, drain_to_video, run_on_frames

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, help="video file or folder of frames")
    p.add_argument("--init-masks", required=True, help="first-frame object masks (indexed PNG)")
    p.add_argument("--out", default="outputs/propagate", help="output folder")
    p.add_argument(
        "--weights",
        default=None,
        help="propagation embedding (e.g. src/instseg/weights/propagation_default.pt) or a "
        "trained model's model.pt (default: ImageNet features)",
    )
    p.add_argument("--fps", type=float, default=None, help="MP4 frame rate (default: source's)")
    p.add_argument("--no-video", action="store_true", help="do not render vis.mp4")
    p.add_argument("--device", default="auto")
    add_propagation_arguments(p)


def add_propagation_arguments(g: Any) -> None:
    """The propagation method's options (shared with the deprecated ``track --init-masks``)."""
    g.add_argument("--max-side", type=int, default=854, help="longer side the features see")
    g.add_argument(
        "--method",
        default="prototypes",
        choices=["prototypes", "labelprop"],
        help="instance prototypes (default) or the standard label-propagation protocol (first "
        "frame + 20 recent frames, top-10, radius 12 cells, tau 0.07; --update, --momentum and "
        "--window do not apply)",
    )
    g.add_argument(
        "--update",
        default="off",
        choices=["off", "initial", "momentum"],
        help="Eq. 5.8 running prototypes: last frame's (off), first frame's only, or momentum",
    )
    g.add_argument("--momentum", type=float, default=0.2, help="Eq. 5.8 lambda (--update momentum)")
    g.add_argument("--window", type=float, default=1.0, help="spatial window (object radii)")


def run(args: argparse.Namespace) -> int:
    return run_on_frames(args, "instseg propagate", run_propagation)


def run_propagation(args: argparse.Namespace, frames: Iterator, out: Path, fps: float) -> int:
    """Propagate ``args.init_masks`` over ``frames`` ((name, RGB, _) tuples); writes
    ``out/masks/<frame>.png`` and ``out/vis.mp4``; returns the number of frames written."""
    from instseg.data.davis import write_davis_label
    from instseg.inference.mask_propagation import BackboneFeatures, propagate_features
    from instseg.models.video.mask_propagation import PrototypePropagator
    from instseg.models.video.mask_propagation_labelprop import ContextLabelPropagator

    name0, frame0, _ = next(frames)
    first = _first_labels(Path(args.init_masks), name0, frame0.shape[:2])
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    features = BackboneFeatures(
        max_side=args.max_side,
        device="cpu" if device == "auto" else device,
        weights=args.weights,  # None: the ImageNet backbone
    )
    if features.source == "backbone":
        log.warning(
            "%s: semi-supervised propagation on this model's fine-tuned backbone; the "
            "ImageNet backbone (no --weights) or a propagation embedding "
            "(weights/propagation_default.pt) propagate better (see its model card)",
            args.weights,
        )
    if getattr(args, "method", "prototypes") == "labelprop":
        prop = ContextLabelPropagator()
    else:
        prop = PrototypePropagator(update=args.update, momentum=args.momentum, window=args.window)
    pending: list[tuple[str, np.ndarray]] = []

    def feats() -> Iterator[torch.Tensor]:
        for name, frame, _ in chain_first((name0, frame0, None), frames):
            if frame.shape[:2] != frame0.shape[:2]:
                raise ValueError(f"{args.source}: frame '{name}' is {frame.shape[:2]}, "
                                 f"the first is {frame0.shape[:2]}")  # fmt: skip
            pending.append((name, frame))
            yield features(frame)

    n = 0

    def rendered() -> Iterator[np.ndarray]:
        nonlocal n
        stride = features.stride(first.shape)
        for labels in propagate_features(feats(), first, propagator=prop, stride=stride):
            name, frame = pending.pop(0)
            write_davis_label(out / "masks" / f"{name}.png", labels)
            n += 1
            yield _overlay(frame, labels)

    drain_to_video(rendered(), out / "vis.mp4", fps, render=not args.no_video)
    return n


def _first_labels(path: Path, name: str, size: tuple[int, int]) -> np.ndarray:
    import cv2

    from instseg.data.davis import read_davis_label

    if path.is_dir():
        cand = path / f"{name}.png"
        pngs = sorted(path.glob("*.png"))
        if not cand.is_file() and not pngs:
            raise FileNotFoundError(f"{path}: no .png masks (expected {name}.png)")
        path = cand if cand.is_file() else pngs[0]
    labels = read_davis_label(path)
    if labels.shape != tuple(size):
        log.warning("%s: mask %s resized (nearest) to the frame size %s", path, labels.shape, size)
        labels = cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    if not (labels[labels != 255] > 0).any():
        raise ValueError(f"{path}: the first-frame mask has no object (all background)")
    return labels


def _overlay(frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from instseg.inference.visualize import draw_instances
    from instseg.structures import Instances
    from instseg.structures.masks import masks_to_boxes

    ids = [int(v) for v in np.unique(labels) if v not in (0, 255)]
    masks = torch.from_numpy(labels[None] == np.array(ids).reshape(-1, 1, 1)) if ids else None
    if masks is None:
        return frame
    inst = Instances(
        image_size=labels.shape, boxes=masks_to_boxes(masks).float(),
        labels=torch.zeros(len(ids), dtype=torch.long), masks=masks,
        track_ids=torch.as_tensor(ids),
    )  # fmt: skip
    return draw_instances(frame, inst, class_names=["object"], color_by="track")
