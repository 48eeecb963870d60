"""Mask-head benchmark on cached RoI features (issue 14): can a head see occlusion?

End-to-end tables mix the detector's errors with the mask head's (box AP on heavily occluded
objects is low, so their mask AP is the detector's). This benchmark takes the detector out:

1. **Scenes** (:func:`benchmark_scenes`): the project's synthetic occlusion scenes, heavier
   occlusion than the training recipe (``occlusion`` 0.9, 2-6 objects) with same-class
   look-alike overlaps (``same_class_overlap``); real DAVIS cutouts when the shared data is
   there. Three sets: ``train`` (training sequences), ``test`` (the same distribution, other
   seed) and ``unseen`` (only the held-out sequences, :data:`IMAGE_HELD_OUT`).
2. **Frozen features, cached once** (:func:`build_roi_set`): a trained image model's
   backbone + FPN (default: the shipped objects model) in fp32; RoI features pooled exactly as
   the segmenter pools them (aligned, P2-P5, 14x14) for the GT boxes plus ``jitter_per_gt``
   jittered boxes (IoU >= 0.5, like proposals) in training, the GT boxes only in evaluation;
   targets projected like the segmenter's (visible, occluder, amodal; 28x28).
3. **Every head freshly initialised** (:func:`train_head`), with the same fixed per-channel
   feature normalisation, the same RoI batches in the same order (per seed), the same
   optimiser, schedule and number of iterations; the head's own loss.
4. **Metrics fixed before running** (:mod:`instseg.evaluation.head_metrics`): primary = mean
   GT-box mask IoU on instances more than 30% occluded; also IoU on unoccluded and partly
   occluded instances, the share of the predicted mask on the occluder, layer-1 occluder IoU,
   GT-box mask AP (pycocotools), and paired per-instance differences against the baseline head
   with image-bootstrap 95% intervals (:func:`summarize`). Module liveness is recorded: the
   gradient norm of every loss term on the first batch, and the affinity entropy and branch /
   input ratio of every non-local block on test RoIs after training.

``benchmarks/mask_heads.py`` is the command line.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor, nn

from instseg.data.davis_splits import IMAGE_HELD_OUT
from instseg.evaluation.coco import evaluate_coco
from instseg.evaluation.head_metrics import instance_scores, occlusion_bins, paired_bootstrap
from instseg.models.heads.base import MaskHead, MaskTargets
from instseg.models.layers.non_local import NonLocalBlock
from instseg.models.segmenter import paste_masks, project_masks
from instseg.models.zoo import BILAYER_HEADS, COMMONALITY_HEADS, mask_rcnn_head

__all__ = [
    "HEADS",
    "HeadBenchConfig",
    "RoiSet",
    "benchmark_scenes",
    "build_roi_set",
    "FeatureNorm",
    "train_head",
    "evaluate_head",
    "module_liveness",
    "summarize",
    "run_benchmark",
]

log = logging.getLogger(__name__)

# head variants by name: the baseline Mask R-CNN head, its capacity control (8 convs: 312k
# parameters against BCNet's 353k at 64 channels), and the BCNet / CPMask variants of the zoo
HEADS: dict[str, Callable[..., MaskHead]] = {
    "maskrcnn": mask_rcnn_head,
    "maskrcnn_8conv": partial(mask_rcnn_head, num_convs=8),
    **{k: v for k, v in BILAYER_HEADS.items() if k != "single_fcn"},  # single_fcn = maskrcnn
    **COMMONALITY_HEADS,
}


# the loss terms of the heads above (``head.loss`` keys without the "loss_" prefix)
LOSS_TERMS = (
    "mask", "contour", "occluder_mask", "occluder_contour", "boundary", "affinity",
)  # fmt: skip


@dataclass
class HeadBenchConfig:
    weights: str  # trained image model whose backbone + FPN give the frozen features
    heads: tuple[str, ...] = ("maskrcnn", "maskrcnn_8conv", "bcnet", "bilayer_fcn", "single_gcn")
    baseline: str = "maskrcnn"  # the head every other one is compared with (paired)
    seeds: tuple[int, ...] = (0, 1, 2)  # head initialisation and RoI order
    data_seed: int = 0  # scenes (a fresh value gives fresh scenes)
    train_images: int = 1200
    test_images: int = 300  # per evaluation set (test and unseen)
    image_size: int = 320
    occlusion: float = 0.9
    min_objects: int = 2
    max_objects: int = 6
    same_class_overlap: float = 0.3
    jitter_per_gt: int = 3
    iters: int = 500
    roi_batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    grad_clip: float = 10.0
    bootstrap: int = 2000
    davis: bool = True  # real cutouts when the shared DAVIS data is found (else shapes only)
    # "visible" (modal) or "amodal": the mask the heads learn and are scored on; with "amodal"
    # the boxes are the amodal boxes and BCNet's occludee layer learns the amodal mask (its
    # occluder layer still the occluders' visible masks), as model.mask_target=amodal trains
    mask_target: str = "visible"
    # oracle rows (CPMask's partially-supervised protocol): this many extra training scenes made
    # of the held-out sequences (other seeds than the unseen evaluation set), so the heads see
    # masks of the "novel" objects; 0 = heads learn from the training sequences only
    oracle_images: int = 0
    # multipliers of named loss terms ("affinity" scales every head's "loss_affinity"); a term
    # not named keeps weight 1.0 (the unweighted sum, our reading of Eqs. 4.1 / 4.4 / 4.6)
    loss_weights: dict[str, float] = field(default_factory=dict)

    def data_key(self) -> dict[str, Any]:
        """The settings that decide the cached RoI sets (see :func:`run_benchmark`)."""
        names = (
            "data_seed", "train_images", "test_images", "image_size", "occlusion", "min_objects",
            "max_objects", "same_class_overlap", "jitter_per_gt", "davis", "mask_target",
            "oracle_images",
        )  # fmt: skip
        return {n: getattr(self, n) for n in names}

    def __post_init__(self) -> None:
        if self.mask_target not in ("visible", "amodal"):
            raise ValueError(f"mask_target must be visible or amodal, got {self.mask_target!r}")
        unknown = sorted(set(self.loss_weights) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; valid: {', '.join(LOSS_TERMS)}")
        bad = {k: v for k, v in self.loss_weights.items() if not (v >= 0 and math.isfinite(v))}
        if bad:
            raise ValueError(f"loss_weights must be finite and >= 0, got {bad}")

    def weighted(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """``terms`` (``{"loss_<name>": value}``) multiplied by ``loss_weights[<name>]``."""
        return {
            k: v * self.loss_weights[k.removeprefix("loss_")]
            if k.removeprefix("loss_") in self.loss_weights
            else v
            for k, v in terms.items()
        }


# ----------------------------------------------------------------------------- scenes


def benchmark_scenes(
    split: str, cfg: HeadBenchConfig, *, banks: dict[str, Any] | None = None
) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
    """Yield ``(image (H, W, 3) uint8, annotated objects)`` of one set (``train``, ``test`` or
    ``unseen``), drawn by :func:`instseg.data.synthetic.make_scene` with seeds
    ``[data_seed * 7919 + offset, i]``. ``banks`` caches the loaded cutout banks by kind."""
    from instseg.data.synthetic import SceneConfig, make_scene
    from instseg.data.synthetic_cutouts import SpriteJitter

    if split not in ("train", "test", "unseen", "oracle"):
        raise ValueError(f"split must be train, test, unseen or oracle, got {split!r}")
    banks = {} if banks is None else banks
    kind = "unseen" if split in ("unseen", "oracle") else "train"
    if kind not in banks:
        banks[kind] = _bank(kind) if cfg.davis else None
    bank = banks[kind]
    scene = SceneConfig(
        image_size=(cfg.image_size, cfg.image_size),
        min_objects=cfg.min_objects,
        max_objects=cfg.max_objects,
        occlusion=cfg.occlusion,
        min_size=0.2,
        max_size=0.7,
        cutout_prob=0.85 if kind == "train" else 1.0,
        real_background_prob=0.8 if kind == "train" else 1.0,
        class_agnostic=True,
        jitter=SpriteJitter() if split == "train" else None,
        shape_size_scale=0.6,
        same_class_overlap=cfg.same_class_overlap,
    )
    n = {"train": cfg.train_images, "oracle": cfg.oracle_images}.get(split, cfg.test_images)
    base = cfg.data_seed * 7919 + {"train": 0, "test": 1000, "unseen": 2000, "oracle": 3000}[split]
    for i in range(n):
        image, objects = make_scene(np.random.default_rng([base, i]), scene, bank=bank)
        yield image, [o for o in objects if o["annotated"]]


def _bank(kind: str) -> Any:
    from instseg.data.synthetic_cutouts import CutoutBank, find_davis_roots

    roots = find_davis_roots()
    if not roots:
        log.warning("no shared DAVIS data found: scenes of procedural shapes only")
        return None
    if kind == "unseen":
        return CutoutBank.load(
            roots, frames_per_sequence=24, include=IMAGE_HELD_OUT, class_name="object"
        )
    return CutoutBank.load(
        roots, frames_per_sequence=24, exclude=IMAGE_HELD_OUT, class_name="object"
    )


# ----------------------------------------------------------------------------- RoI cache


@dataclass
class RoiSet:
    """Cached RoIs of one set. R RoIs, features (R, C, S, S) float16, targets (R, M, M) uint8.

    Evaluation sets (GT boxes only) also keep, per RoI: the image index, the box, the
    occlusion ratio, the look-alike flag and the full-image RLEs of the visible and occluder
    masks, plus each image's size.
    """

    features: Tensor
    masks: Tensor
    occluder: Tensor
    amodal: Tensor
    boxes: Tensor  # (R, 4) float32 xyxy
    image_index: Tensor  # (R,) int64
    is_gt: Tensor  # (R,) bool: the GT box itself (False: a jittered box)
    occlusion_ratio: Tensor  # (R,) float32
    lookalike: Tensor  # (R,) bool
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    visible_rle: list[dict] = field(default_factory=list)
    occluder_rle: list[dict] = field(default_factory=list)
    amodal_rle: list[dict] = field(default_factory=list)
    box_from: str = "visible"  # which mask the GT boxes are the boxes of

    def __len__(self) -> int:
        return int(self.features.shape[0])


def jitter_boxes(
    box: np.ndarray, n: int, rng: np.random.Generator, *, size: tuple[int, int], min_iou: float
) -> list[np.ndarray]:
    """Up to ``n`` boxes around ``box`` (xyxy) with IoU >= ``min_iou`` (proposal-like: each
    side moved by N(0, 0.1 * box size)), clipped to the image ``size`` = (H, W)."""
    from torchvision.ops import box_iou

    h, w = size
    bw, bh = box[2] - box[0], box[3] - box[1]
    out: list[np.ndarray] = []
    for _ in range(n * 20):
        if len(out) == n:
            break
        d = rng.normal(0.0, 0.1, size=4) * np.array([bw, bh, bw, bh])
        b = np.clip(box + d, 0, [w, h, w, h])
        if b[2] - b[0] < 2 or b[3] - b[1] < 2:
            continue
        iou = box_iou(torch.tensor(b[None]), torch.tensor(box[None]))[0, 0]
        if float(iou) >= min_iou:
            out.append(b.astype(np.float32))
    return out


@torch.no_grad()
def build_roi_set(
    model: nn.Module,
    scenes: Iterator[tuple[np.ndarray, list[dict[str, Any]]]],
    *,
    jitter_per_gt: int = 0,
    seed: int = 0,
    keep_rles: bool = False,
    box_from: str = "visible",
    progress: Callable[[int], None] | None = None,
) -> RoiSet:
    """Pool RoI features of ``scenes`` with ``model`` (an :class:`InstanceSegmenter`, in eval
    mode, fp32): GT boxes (the boxes of the ``box_from`` masks: visible or amodal) plus
    ``jitter_per_gt`` jittered boxes each. ``keep_rles`` keeps what :func:`evaluate_head`
    needs (evaluation sets)."""
    from instseg.structures.masks import masks_to_boxes

    rng = np.random.default_rng(seed)
    m = int(model.mask_out_size)
    parts: dict[str, list[Tensor]] = {k: [] for k in RoiSet.__dataclass_fields__}
    sizes: list[tuple[int, int]] = []
    vis_rles: list[dict] = []
    occ_rles: list[dict] = []
    amo_rles: list[dict] = []
    if box_from not in ("visible", "amodal"):
        raise ValueError(f"box_from must be visible or amodal, got {box_from!r}")
    for img_idx, (image, objects) in enumerate(scenes):
        h, w = image.shape[:2]
        sizes.append((h, w))
        if progress is not None:
            progress(img_idx)
        if not objects:
            continue
        vis = torch.from_numpy(np.stack([o["visible"] for o in objects]))
        occ = torch.from_numpy(np.stack([o["occluder"] for o in objects]))
        amo = torch.from_numpy(np.stack([o["amodal"] for o in objects]))
        gt = masks_to_boxes(vis if box_from == "visible" else amo).float()  # (N, 4) xyxy
        boxes, idx, is_gt = (
            [gt],
            [torch.arange(len(objects))],
            [torch.ones(len(objects), dtype=torch.bool)],
        )
        for k in range(len(objects)):
            extra = jitter_boxes(gt[k].numpy(), jitter_per_gt, rng, size=(h, w), min_iou=0.5)
            if extra:
                boxes.append(torch.from_numpy(np.stack(extra)))
                idx.append(torch.full((len(extra),), k))
                is_gt.append(torch.zeros(len(extra), dtype=torch.bool))
        b, i, g = torch.cat(boxes), torch.cat(idx), torch.cat(is_gt)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        feats, padded = model.features(x.contiguous(memory_format=torch.channels_last))
        pooled = model.mask_roi_pool(feats, [b], [padded])
        parts["features"].append(pooled.to(torch.float16))
        parts["masks"].append(project_masks(vis, b, i, m).to(torch.uint8))
        parts["occluder"].append(project_masks(occ, b, i, m).to(torch.uint8))
        parts["amodal"].append(project_masks(amo, b, i, m).to(torch.uint8))
        parts["boxes"].append(b)
        parts["image_index"].append(torch.full((len(b),), img_idx, dtype=torch.int64))
        parts["is_gt"].append(g)
        ratio = torch.tensor([o["occlusion_ratio"] for o in objects], dtype=torch.float32)
        parts["occlusion_ratio"].append(ratio[i])
        look = torch.tensor([bool(o.get("lookalike", False)) for o in objects])
        parts["lookalike"].append(look[i])
        if keep_rles:
            for k in i.tolist():
                vis_rles.append(_rle(objects[k]["visible"]))
                occ_rles.append(_rle(objects[k]["occluder"]))
                amo_rles.append(_rle(objects[k]["amodal"]))
    if not parts["features"]:
        raise ValueError("build_roi_set: the scenes hold no annotated object")
    cat = {k: torch.cat(v) for k, v in parts.items() if v}
    return RoiSet(
        **cat, image_sizes=sizes, visible_rle=vis_rles, occluder_rle=occ_rles,
        amodal_rle=amo_rles, box_from=box_from,
    )  # fmt: skip


def _rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


# ----------------------------------------------------------------------------- training


class FeatureNorm(nn.Module):
    """Fixed per-channel standardisation of RoI features (the same for every head):
    (x - mean) / std with statistics of the training RoIs."""

    def __init__(self, *, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float().view(1, -1, 1, 1))
        self.register_buffer("std", std.float().clamp_min(1e-6).view(1, -1, 1, 1))

    @classmethod
    def fit(cls, features: Tensor, *, max_rois: int = 4096) -> FeatureNorm:
        """Statistics over (at most ``max_rois`` evenly spaced) RoIs (R, C, S, S)."""
        step = max(1, features.shape[0] // max_rois)
        x = features[::step].float()
        return cls(mean=x.mean(dim=(0, 2, 3)), std=x.std(dim=(0, 2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std


def _targets(rois: RoiSet, idx: Tensor, mask_target: str = "visible") -> MaskTargets:
    return MaskTargets(
        masks=(rois.amodal if mask_target == "amodal" else rois.masks)[idx].float(),
        labels=torch.zeros(len(idx), dtype=torch.int64),
        occluder=rois.occluder[idx].float(),
        amodal=rois.amodal[idx].float(),
    )


def build_head(name: str, *, in_channels: int, seed: int) -> MaskHead:
    """A freshly initialised class-agnostic head ``name`` (initialised under ``seed``)."""
    if name not in HEADS:
        raise KeyError(f"unknown head {name!r}; valid: {', '.join(sorted(HEADS))}")
    torch.manual_seed(seed)
    return HEADS[name](in_channels=in_channels, num_classes=1, class_aware=False)


def train_head(
    head: MaskHead,
    rois: RoiSet,
    norm: FeatureNorm,
    cfg: HeadBenchConfig,
    *,
    seed: int,
    log_every: int = 0,
) -> dict[str, Any]:
    """Train ``head`` on ``rois`` for ``cfg.iters`` iterations of ``cfg.roi_batch`` RoIs
    (AdamW, linear warm-up then cosine, gradient clipping). The RoI order depends on ``seed``
    only, so every head with the same seed sees the same batches. Returns a record: seconds,
    loss of the first / last 10% of iterations, and the gradient norm of every loss term on
    the first batch (each term alone; 0 means the term trains nothing)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(it: int) -> float:
        if it < cfg.warmup_iters:
            return cfg.lr * (it + 1) / cfg.warmup_iters
        t = (it - cfg.warmup_iters) / max(1, cfg.iters - cfg.warmup_iters)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * t))

    head.train()
    order = torch.randperm(len(rois), generator=gen)
    pos = 0
    losses: list[float] = []
    term_grads: dict[str, float] = {}
    t0 = time.perf_counter()
    for it in range(cfg.iters):
        if pos + cfg.roi_batch > len(order):
            order, pos = torch.randperm(len(rois), generator=gen), 0
        idx = order[pos : pos + cfg.roi_batch]
        pos += cfg.roi_batch
        out = head(norm(rois.features[idx]))
        terms = cfg.weighted(head.loss(out, _targets(rois, idx, cfg.mask_target)))
        if it == 0:
            term_grads = _term_gradients(terms, params)
        loss = sum(terms.values())
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and (it + 1) % log_every == 0:
            log.info(
                "  iter %d/%d loss %.4f", it + 1, cfg.iters, float(np.mean(losses[-log_every:]))
            )
    k = max(1, cfg.iters // 10)
    head.eval()
    return {
        "seconds": time.perf_counter() - t0,
        "loss_first": float(np.mean(losses[:k])),
        "loss_last": float(np.mean(losses[-k:])),
        "term_grad_norm": term_grads,
        "params": sum(p.numel() for p in params),
    }


def _term_gradients(terms: dict[str, Tensor], params: list[nn.Parameter]) -> dict[str, float]:
    out = {}
    for name, value in terms.items():
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        out[name] = float(
            torch.sqrt(
                sum((g.float() ** 2).sum() for g in grads if g is not None) or torch.tensor(0.0)
            )
        )
    return out


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_head(
    head: MaskHead,
    rois: RoiSet,
    norm: FeatureNorm,
    *,
    batch: int = 256,
    mask_target: str = "visible",
) -> dict[str, Any]:
    """Per-instance scores of ``head`` on an evaluation set (GT boxes) and its GT-box mask AP,
    against the visible masks or (``mask_target="amodal"``) the amodal ones.

    Returns ``{"iou", "on_occluder", "occluder_iou", "hidden_recall"}`` (N,) arrays (the last
    NaN unless amodal), ``"mask_ap"`` (pycocotools segm metrics, each detection = a GT box with
    the head's mask, scored by the mean foreground probability inside its mask).
    """
    head.eval()
    probs, occ_probs = [], []
    for s in range(0, len(rois), batch):
        out = head(norm(rois.features[s : s + batch]))
        labels = torch.zeros(out["mask"].shape[0], dtype=torch.int64)
        probs.append(head.predict(out, labels).float())
        if "occluder_mask" in out:
            occ_probs.append(out["occluder_mask"][:, 0].float().sigmoid())
    p = torch.cat(probs)
    po = torch.cat(occ_probs) if occ_probs else None
    pred, pred_occ, scores = [], [], []
    for img in torch.unique(rois.image_index).tolist():
        sel = torch.nonzero(rois.image_index == img).squeeze(1)
        size = rois.image_sizes[img]
        masks = paste_masks(p[sel], rois.boxes[sel], size, threshold=0.5)
        pred += [_rle(m.numpy()) for m in masks]
        if po is not None:
            omasks = paste_masks(po[sel], rois.boxes[sel], size, threshold=0.5)
            pred_occ += [_rle(m.numpy()) for m in omasks]
        for q in p[sel]:
            fg = q[q > 0.5]
            scores.append(float(fg.mean()) if fg.numel() else float(q.max()))
    order = torch.cat(
        [
            torch.nonzero(rois.image_index == i).squeeze(1)
            for i in torch.unique(rois.image_index).tolist()
        ]
    ).tolist()
    gt_rles = rois.amodal_rle if mask_target == "amodal" else rois.visible_rle
    gt = [gt_rles[i] for i in order]
    occ = [rois.occluder_rle[i] for i in order]
    boxes = rois.boxes[order].numpy()
    sc = instance_scores(
        pred, gt, occ, boxes, pred_occluder=pred_occ if po is not None else None,
        hidden=[rois.amodal_rle[i] for i in order] if mask_target == "amodal" else None,
    )  # fmt: skip
    inv = np.empty(len(order), dtype=np.int64)
    inv[np.asarray(order)] = np.arange(len(order))  # back to the RoI order of ``rois``
    return {
        "iou": sc.iou[inv],
        "on_occluder": sc.on_occluder[inv],
        "occluder_iou": sc.occluder_iou[inv],
        "hidden_recall": sc.hidden_recall[inv],
        "mask_ap": _gt_box_ap(rois, gt_rles, [pred[i] for i in inv], [scores[i] for i in inv]),
    }


def _gt_box_ap(
    rois: RoiSet, gt_rles: list[dict], pred: list[dict], scores: list[float]
) -> dict[str, float]:
    images = [
        {"id": i + 1, "height": h, "width": w, "file_name": f"{i + 1}.png"}
        for i, (h, w) in enumerate(rois.image_sizes)
    ]
    anns, dets = [], []
    for r in range(len(rois)):
        img = int(rois.image_index[r]) + 1
        x0, y0, x1, y1 = (float(v) for v in rois.boxes[r])
        gt = dict(gt_rles[r])
        anns.append(
            {
                "id": r + 1, "image_id": img, "category_id": 1, "iscrowd": 0,
                "segmentation": _json_rle(gt), "area": float(mask_utils.area(gt)),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
            }
        )  # fmt: skip
        dets.append(
            {"image_id": img, "category_id": 1, "segmentation": _json_rle(pred[r]),
             "score": scores[r], "bbox": [x0, y0, x1 - x0, y1 - y0]}
        )  # fmt: skip
    gt_data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
    m = evaluate_coco(gt_data, dets, iou_type="segm")
    return {k: float(m[k]) for k in ("AP", "AP50", "AP75")}


def _json_rle(rle: dict) -> dict:
    c = rle["counts"]
    return {"size": list(rle["size"]), "counts": c.decode() if isinstance(c, bytes) else c}


@torch.no_grad()
def module_liveness(head: MaskHead, features: Tensor) -> list[dict[str, float]]:
    """For every :class:`NonLocalBlock` in ``head``, on ``features`` (normalised RoI features):
    the mean affinity-row entropy (nats; uniform = log N), the mean largest affinity weight, and
    the branch / input ratio |branch| / |X| of the block's input X: Z - X for BCNet's residual
    blocks, the aggregated term A X W_g that CPMask adds (Eq. 4.6) for residual-free ones."""
    seen: list[tuple[str, Tensor]] = []
    blocks = [(n, m) for n, m in head.named_modules() if isinstance(m, NonLocalBlock)]
    for name, block in blocks:  # capture each block's input, however the head calls it

        def spy(x: Tensor, *, _name: str = name, _fn: Callable = block.affinity) -> Tensor:
            seen.append((_name, x.detach()))
            return _fn(x)

        block.affinity = spy  # type: ignore[method-assign]
    try:
        head(features)
    finally:
        for _, block in blocks:
            del block.affinity
    by_name = dict(blocks)
    out = []
    for name, x in seen:
        block = by_name[name]
        a = block.affinity(x)
        if block.residual:
            branch = block.forward_with_affinity(x)[0] - x
        else:
            branch = block.aggregate(x, a)
        ent = -(a.clamp_min(1e-12).log() * a).sum(-1).mean()
        ratio = branch.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)
        out.append(
            {
                "block": name,
                "entropy": float(ent),
                "uniform_entropy": math.log(a.shape[-1]),
                "max_weight": float(a.max(dim=-1).values.mean()),
                "branch_ratio": float(ratio.mean()),
            }
        )
    return out


# ----------------------------------------------------------------------------- summary


def _bin_means(scores: dict[str, np.ndarray], bins: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for b, sel in bins.items():  # occlusion levels, and "lookalike" (> 30% occluded ones)
        out[f"iou_{b}"] = _nanmean(scores["iou"][sel])
    occ = bins["occluded"]
    out["on_occluder_occluded"] = _nanmean(scores["on_occluder"][occ])
    out["occluder_iou"] = _nanmean(scores["occluder_iou"])
    out["hidden_recall_occluded"] = _nanmean(scores["hidden_recall"][occ])
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def _nanstd(x: np.ndarray) -> float:
    """Sample standard deviation over the defined values (0 for one, NaN for none)."""
    x = x[~np.isnan(x)]
    return float(x.std(ddof=1)) if x.size > 1 else (0.0 if x.size else float("nan"))


def summarize(
    results: dict[str, dict[int, dict[str, Any]]],
    rois: RoiSet,
    *,
    baseline: str,
    controls: Sequence[str] = ("maskrcnn_8conv",),
    bootstrap: int = 2000,
) -> dict[str, Any]:
    """Tables of one evaluation set from ``results[head][seed]`` (:func:`evaluate_head`).

    Per head: mean and standard deviation over seeds of every bin mean and of the mask AP;
    paired differences (head minus ``baseline``, and minus each control present) of the
    per-instance IoU averaged over seeds, on the occluded (primary), unoccluded and all
    instances, with image-bootstrap 95% intervals.
    """
    ratio = rois.occlusion_ratio.numpy()
    bins = occlusion_bins(ratio)
    # > 30% occluded instances in a look-alike overlap (same class and sequence / texture)
    bins["lookalike"] = bins["occluded"] & rois.lookalike.numpy()
    groups = rois.image_index.numpy()
    table: dict[str, Any] = {}
    mean_iou: dict[str, np.ndarray] = {}
    for head, per_seed in results.items():
        rows = [
            {**_bin_means(r, bins), **{f"AP{k[2:]}": v for k, v in r["mask_ap"].items()}}
            for r in per_seed.values()
        ]
        keys = rows[0].keys()
        table[head] = {
            "seeds": sorted(per_seed),
            "mean": {k: _nanmean(np.array([r[k] for r in rows], float)) for k in keys},
            "std": {k: _nanstd(np.array([r[k] for r in rows], float)) for k in keys},
            "per_seed": rows,
        }
        mean_iou[head] = np.mean(np.stack([r["iou"] for r in per_seed.values()]), axis=0)
    paired: dict[str, Any] = {}
    refs = [baseline, *[c for c in controls if c in results and c != baseline]]
    for ref in refs:
        if ref not in results:
            continue
        for head in results:
            if head == ref or (head == baseline and ref != baseline):  # no mirrored rows
                continue
            key = f"{head} - {ref}"
            paired[key] = {}
            for b, sel in {"occluded": bins["occluded"], "unoccluded": bins["unoccluded"],
                           "all": np.ones_like(bins["occluded"])}.items():  # fmt: skip
                iv = paired_bootstrap(
                    mean_iou[head][sel], mean_iou[ref][sel], groups[sel], resamples=bootstrap
                )
                paired[key][b] = dataclasses.asdict(iv)
    counts = {b: int(sel.sum()) for b, sel in bins.items()}
    return {"instances": counts, "heads": table, "paired": paired}


def run_benchmark(
    cfg: HeadBenchConfig, *, model: nn.Module, cache_dir: str | Path | None = None
) -> dict[str, Any]:
    """The whole benchmark with ``model`` (a loaded image model: its backbone + FPN give the
    features). Returns the report (config, timings, liveness, tables per evaluation set) and,
    under ``"arrays"``, the per-instance values (``<set>/<head>/<seed>/iou`` ...) as arrays.

    ``cache_dir``: RoI sets are saved under ``cache_dir/<digest>/`` (digest of the weights file
    and :meth:`HeadBenchConfig.data_key`) and reused by later runs with the same data settings
    (e.g. other heads or seeds)."""
    t0 = time.perf_counter()
    banks: dict[str, Any] = {}
    sets: dict[str, RoiSet] = {}
    folder = Path(cache_dir) / _cache_digest(cfg) if cache_dir else None
    splits = ["train", "test", "unseen"] + (["oracle"] if cfg.oracle_images else [])
    for split in splits:
        if split in ("unseen", "oracle") and not (cfg.davis and _bank_available()):
            log.info("no shared DAVIS data: no %s set", split)
            continue
        if folder is not None and (folder / f"{split}.pt").is_file():
            log.info("loading cached %s RoI features from %s", split, folder)
            sets[split] = load_roi_set(folder / f"{split}.pt")
            continue
        log.info("caching %s RoI features", split)
        sets[split] = build_roi_set(
            model,
            benchmark_scenes(split, cfg, banks=banks),
            jitter_per_gt=cfg.jitter_per_gt if split in ("train", "oracle") else 0,
            seed=cfg.data_seed,
            keep_rles=split in ("test", "unseen"),
            box_from=cfg.mask_target,
        )
        if folder is not None:
            save_roi_set(sets[split], folder / f"{split}.pt")
    cache_s = time.perf_counter() - t0
    train = sets.pop("train")
    if "oracle" in sets:
        train = _cat_sets(train, sets.pop("oracle"))
    norm = FeatureNorm.fit(train.features)
    c = int(train.features.shape[1])
    results: dict[str, dict[str, dict[int, Any]]] = {s: {} for s in sets}
    records: dict[str, dict[int, Any]] = {}
    liveness: dict[str, Any] = {}
    for head_name in cfg.heads:
        records[head_name] = {}
        for seed in cfg.seeds:
            head = build_head(head_name, in_channels=c, seed=seed)
            rec = train_head(head, train, norm, cfg, seed=seed)
            log.info(
                "%s seed %d: %d params, loss %.3f -> %.3f in %.0f s",
                head_name, seed, rec["params"], rec["loss_first"], rec["loss_last"], rec["seconds"],
            )  # fmt: skip
            records[head_name][seed] = rec
            for split, rois in sets.items():
                results[split].setdefault(head_name, {})[seed] = evaluate_head(
                    head, rois, norm, mask_target=cfg.mask_target
                )
            if seed == cfg.seeds[0]:
                first = next(iter(sets.values()))
                liveness[head_name] = module_liveness(head, norm(first.features[:128]))
    report = {
        "config": dataclasses.asdict(cfg),
        "rois": {"train": len(train), **{s: len(r) for s, r in sets.items()}},
        "cache_seconds": cache_s,
        "training": records,
        "liveness": liveness,
        "sets": {
            s: summarize(results[s], sets[s], baseline=cfg.baseline, bootstrap=cfg.bootstrap)
            for s in sets
        },
    }
    report["seconds"] = time.perf_counter() - t0
    # per-instance values for re-analysis (not JSON: the caller saves them, e.g. as .npz)
    arrays: dict[str, np.ndarray] = {}
    for split, rois in sets.items():
        arrays[f"{split}/occlusion_ratio"] = rois.occlusion_ratio.numpy()
        arrays[f"{split}/image_index"] = rois.image_index.numpy()
        arrays[f"{split}/lookalike"] = rois.lookalike.numpy()
        for head, per_seed in results[split].items():
            for seed, r in per_seed.items():
                for k in ("iou", "on_occluder", "occluder_iou", "hidden_recall"):
                    arrays[f"{split}/{head}/{seed}/{k}"] = r[k]
    report["arrays"] = arrays
    return report


def _cache_digest(cfg: HeadBenchConfig) -> str:
    import hashlib
    import json

    w = Path(cfg.weights)
    ident = {"weights": w.name, "bytes": w.stat().st_size if w.is_file() else None}
    text = json.dumps({**ident, **cfg.data_key()}, sort_keys=True).encode()
    return hashlib.sha1(text).hexdigest()[:12]


def save_roi_set(rois: RoiSet, path: Path) -> None:
    """Write ``rois`` atomically as plain tensors, lists and strings (loadable with
    ``torch.load(weights_only=True)``)."""
    from instseg.utils.io import atomic_write

    obj = {}
    for f in dataclasses.fields(rois):
        v = getattr(rois, f.name)
        if f.name.endswith("_rle"):
            v = [_json_rle(r) for r in v]
        obj[f.name] = v
    atomic_write(path, lambda p: torch.save(obj, p))


def load_roi_set(path: Path) -> RoiSet:
    """A :func:`save_roi_set` file back (RLE counts as bytes again, as pycocotools makes them)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for k in [k for k in obj if k.endswith("_rle")]:
        obj[k] = [{"size": r["size"], "counts": r["counts"].encode()} for r in obj[k]]
    obj["image_sizes"] = [tuple(s) for s in obj["image_sizes"]]
    return RoiSet(**obj)


def _cat_sets(a: RoiSet, b: RoiSet) -> RoiSet:
    """Training RoIs of two sets together (image indices of ``b`` shifted after ``a``'s)."""
    shifted = b.image_index + len(a.image_sizes)
    out = {}
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "image_index":
            y = shifted
        out[f.name] = (
            torch.cat([x, y]) if isinstance(x, Tensor) else (x if isinstance(x, str) else x + y)
        )
    return RoiSet(**out)


def _bank_available() -> bool:
    from instseg.data.synthetic_cutouts import find_davis_roots

    return bool(find_davis_roots())


def format_report(report: dict[str, Any]) -> str:
    """Markdown tables of a :func:`run_benchmark` report."""
    lines = []
    cfg = report["config"]
    amodal = cfg.get("mask_target", "visible") == "amodal"
    lines.append(
        f"Heads trained {cfg['iters']} iterations x {cfg['roi_batch']} RoIs on "
        f"{report['rois']['train']} cached training RoIs, seeds {cfg['seeds']}, "
        f"data seed {cfg['data_seed']}; masks learned and scored: "
        + (
            "**amodal** (amodal GT boxes)."
            if amodal
            else "visible (GT boxes of the visible masks)."
        )
        + (
            " Loss weights: "
            + ", ".join(f"{k} x {v:g}" for k, v in cfg["loss_weights"].items())
            + " (other terms x 1)."
            if cfg.get("loss_weights")
            else ""
        )
    )
    # amodal: the share of the hidden part recovered; visible: the share of the mask wrongly
    # put on the occluder
    extra_key, extra_name = (
        ("hidden_recall_occluded", "hidden part recovered")
        if amodal
        else ("on_occluder_occluded", "pred. on occluder")
    )
    for split, s in report["sets"].items():
        n = s["instances"]
        lines += [
            "",
            f"### {split}: {sum(n[k] for k in ('unoccluded', 'partial', 'occluded'))} instances "
            f"({n['occluded']} > 30% occluded, {n['partial']} 1-30%, {n['unoccluded']} "
            f"unoccluded; {n['lookalike']} of the > 30% occluded in look-alike overlaps)",
            "",
            "| head | params | IoU >30% occl. (primary) | IoU 1-30% | IoU unoccl. | "
            f"IoU look-alike >30% | {extra_name} | layer-1 occl. IoU | mask AP | AP50 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for head, t in s["heads"].items():
            m, d = t["mean"], t["std"]
            params = next(iter(report["training"][head].values()))["params"]

            def f(k: str, scale: float = 100.0, m: dict = m, d: dict = d) -> str:
                if math.isnan(m[k]):
                    return "-"
                return f"{m[k] * scale:.1f} ± {d[k] * scale:.1f}"

            lines.append(
                f"| {head} | {params / 1e3:.0f}k | {f('iou_occluded')} | {f('iou_partial')} | "
                f"{f('iou_unoccluded')} | {f('iou_lookalike')} | "
                f"{f(extra_key)} | {f('occluder_iou')} | "
                f"{f('AP', 1.0)} | {f('AP50', 1.0)} |"
            )
        lines += [
            "",
            "Paired differences of per-instance IoU (mean over seeds), points, image-bootstrap "
            "95% interval:",
            "",
            "| comparison | > 30% occluded | unoccluded | all |",
            "|---|---:|---:|---:|",
        ]
        for key, p in s["paired"].items():
            cells = [
                f"{p[b]['mean'] * 100:+.2f} [{p[b]['low'] * 100:+.2f}, {p[b]['high'] * 100:+.2f}]"
                for b in ("occluded", "unoccluded", "all")
            ]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if report.get("liveness"):
        lines += ["", "Non-local blocks after training (first seed; test RoIs):", ""]
        for head, blocks in report["liveness"].items():
            for b in blocks:
                lines.append(
                    f"- {head} `{b['block']}`: affinity entropy {b['entropy']:.2f} "
                    f"(uniform {b['uniform_entropy']:.2f}), max weight {b['max_weight']:.2f}, "
                    f"branch/|X| {b['branch_ratio']:.2f}"
                )
    lines += ["", "Gradient norm of each loss term on the first batch (seed 0):", ""]
    for head, recs in report["training"].items():
        g = next(iter(recs.values()))["term_grad_norm"]
        lines.append(f"- {head}: " + ", ".join(f"{k} {v:.3g}" for k, v in g.items()))
    return "\n".join(lines)
