"""COCO box / mask AP with the official pycocotools protocol, plus class-split AP.

Metric keys (percent, detectron2 convention): ``AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs
ARm ARl``: the 12 numbers of ``COCOeval.summarize()`` in that order, times 100. Where
pycocotools reports -1 (no ground truth at all in that area range for the evaluated
categories) the value is ``float("nan")``, not -1; a range with ground truth but no matching
detection is 0. An empty results list is valid and scores 0 (NaN where there is no GT).

Conventions (as detectron2): for ``segm`` the results' ``bbox`` is dropped before loading so
the area used for the small/medium/large ranges comes from the mask; for ``bbox`` a missing box
is derived from the mask. Class splits (``class_split="voc"`` or a dict name -> category ids
or names) add one nested dict of the same keys per split, equal to pycocotools run with
``params.catIds`` restricted to that split (the accumulated per-category precision/recall are
sliced, which gives the same numbers exactly).

Two backends: ``"pycocotools"`` (the reference, default) and ``"faster"`` (faster-coco-eval's
C++ ``COCOeval_faster``; verified equal to 1e-6 on the tests' data).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instseg.evaluation.evaluator import DatasetEvaluator
from instseg.structures import Instances
from instseg.structures.batch import Batch
from instseg.structures.ops import resize_instances
from instseg.utils.io import atomic_write_json, read_json

__all__ = [
    "METRIC_KEYS",
    "VOC_CLASS_NAMES",
    "COCOEvaluator",
    "evaluate_coco",
    "format_metrics_table",
    "instances_to_coco_results",
    "load_coco_gt",
    "rescale_instances",
    "resolve_class_split",
]

METRIC_KEYS = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)

#: the 20 PASCAL VOC classes under their COCO names
VOC_CLASS_NAMES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "boat",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "bottle",
    "chair",
    "couch",
    "potted plant",
    "dining table",
    "tv",
)

IOU_TYPES = ("bbox", "segm")
BACKENDS = ("pycocotools", "faster")
ClassSplit = str | Mapping[str, Sequence[int | str]] | None


# ----------------------------------------------------------------------------- predictions
def instances_to_coco_results(
    inst: Instances,
    *,
    image_id: int,
    category_ids: list[int],
    scale: tuple[float, float] | None = None,
) -> list[dict[str, Any]]:
    """Predictions of one image -> COCO results entries.

    ``inst`` needs ``boxes`` (N, 4) xyxy, ``labels`` (N,) contiguous in
    ``[0, len(category_ids))`` and ``scores`` (N,); ``masks`` (N, H, W) bool (or float
    probabilities, thresholded at 0.5) is optional. Each entry has ``image_id``,
    ``category_id`` (``category_ids[label]``), ``bbox`` [x, y, w, h], ``score`` and, with
    masks, ``segmentation`` as compressed RLE with str ``counts``. ``scale=(sx, sy)``
    multiplies box x / y coordinates; masks are encoded as given (resize them first with
    :func:`rescale_instances`).
    """
    n = len(inst)
    if n == 0:
        return []
    if inst.scores is None:
        raise ValueError("instances_to_coco_results: predictions need scores")
    labels = inst.labels.detach().cpu().long()
    if int(labels.min()) < 0 or int(labels.max()) >= len(category_ids):
        raise ValueError(
            f"labels must be in [0, {len(category_ids)}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    boxes = inst.boxes.detach().float().cpu().clone()
    if scale is not None:
        boxes[:, 0::2] *= float(scale[0])
        boxes[:, 1::2] *= float(scale[1])
    boxes[:, 2:] -= boxes[:, :2]
    scores = inst.scores.detach().float().cpu().tolist()
    rles = _encode_masks(inst.masks) if inst.masks is not None else None
    out = []
    for i in range(n):
        r: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(category_ids[int(labels[i])]),
            "bbox": [round(float(v), 3) for v in boxes[i].tolist()],
            "score": float(scores[i]),
        }
        if rles is not None:
            r["segmentation"] = rles[i]
        out.append(r)
    return out


def _encode_masks(masks: torch.Tensor) -> list[dict[str, Any]]:
    """(N, H, W) bool/float -> N compressed RLE dicts with str counts (one pycocotools call)."""
    m = masks.detach().cpu()
    m = m > 0.5 if m.is_floating_point() else m.bool()
    arr = np.asfortranarray(m.permute(1, 2, 0).numpy().astype(np.uint8))
    rles = mask_util.encode(arr)
    return [
        {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
        for r in rles
    ]


rescale_instances = resize_instances  # kept as the evaluator's public name


# ----------------------------------------------------------------------------- evaluator
class COCOEvaluator(DatasetEvaluator):
    """COCO AP of a model's predictions against a COCO-format ground-truth file.

    ``category_ids[label]`` maps contiguous labels to the GT's category ids. Predictions are
    in batch image coordinates; where ``batch.orig_sizes[i]`` differs from
    ``batch.image_sizes[i]`` they are rescaled to the original image (boxes scaled, masks
    interpolated). Only the images processed are scored (the GT may hold more).

    ``evaluate()`` returns ``{iou_type: {metric key: float, [split name: {...}]}}`` on rank 0
    (results are gathered with ``all_gather_object`` when torch.distributed is initialised)
    and ``{}`` on other ranks; with ``out_dir`` it also writes ``out_dir/results.json``.
    """

    def __init__(
        self,
        gt: str | Path | COCO | dict,
        *,
        iou_types: Sequence[str] = ("bbox", "segm"),
        category_ids: list[int],
        class_split: ClassSplit = None,
        out_dir: str | Path | None = None,
        backend: str = "pycocotools",
    ) -> None:
        self.coco_gt = load_coco_gt(gt, iou_types=iou_types)
        self._gt_name = _source_name(gt)
        missing = sorted(set(category_ids) - set(self.coco_gt.getCatIds()))
        if missing:
            raise ValueError(
                f"{self._gt_name}: category_ids {missing} are not in the GT categories"
            )
        _check_choice("backend", backend, BACKENDS)
        self.iou_types = tuple(iou_types)
        self.category_ids = list(category_ids)
        self.class_split = class_split
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.backend = backend
        self.reset()

    def reset(self) -> None:
        self._results: list[dict[str, Any]] = []
        self._image_ids: list[int] = []

    def process(self, batch: Batch, outputs: list[Instances]) -> None:
        if len(batch.image_ids) != len(outputs):
            raise ValueError(f"batch has {len(batch.image_ids)} image_ids, {len(outputs)} outputs")
        for i, inst in enumerate(outputs):
            image_id = int(batch.image_ids[i])
            if image_id not in self.coco_gt.imgs:
                raise ValueError(f"{self._gt_name}: image id {image_id} is not in the GT")
            if "segm" in self.iou_types and inst.masks is None:
                raise ValueError("COCOEvaluator with iou_type 'segm' needs predicted masks")
            inst = inst.to("cpu").to(torch.float32)
            size = tuple(batch.image_sizes[i]) if batch.image_sizes else inst.image_size
            inst = inst.replace(image_size=size)
            if inst.masks is not None:
                inst = inst.replace(masks=inst.masks[:, : size[0], : size[1]])
            if batch.orig_sizes and tuple(batch.orig_sizes[i]) != size:
                inst = rescale_instances(inst, tuple(batch.orig_sizes[i]))
            self._image_ids.append(image_id)
            self._results += instances_to_coco_results(
                inst, image_id=image_id, category_ids=self.category_ids
            )

    def evaluate(self) -> dict[str, Any]:
        results, image_ids = _gather(self._results), _gather(self._image_ids)
        if results is None or image_ids is None:
            return {}  # not rank 0
        if not image_ids:
            warnings.warn(
                "COCOEvaluator: no images were processed; nothing to evaluate", stacklevel=2
            )
            return {}
        if self.out_dir is not None:
            atomic_write_json(self.out_dir / "results.json", results)
        return {
            t: evaluate_coco(
                self.coco_gt,
                results,
                iou_type=t,
                class_split=self.class_split,
                backend=self.backend,
                img_ids=sorted(set(image_ids)),
            )
            for t in self.iou_types
        }


def _gather(items: list[Any]) -> list[Any] | None:
    """Concatenate ``items`` of all ranks on rank 0 (None on other ranks)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(items)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    if dist.get_rank() != 0:
        return None
    return [x for p in parts for x in p]


# ----------------------------------------------------------------------------- scoring
def evaluate_coco(
    gt: str | Path | COCO | dict,
    results: str | Path | list[dict[str, Any]],
    *,
    iou_type: str = "segm",
    class_split: ClassSplit = None,
    backend: str = "pycocotools",
    img_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Score ``results`` (a COCO results JSON file or its list) against ``gt``.

    Returns ``{key: float}`` for :data:`METRIC_KEYS` (percent, NaN where there is no GT), plus
    one ``{split name: {key: float}}`` per class split. ``img_ids`` restricts the images
    scored (default: all GT images). Bad input raises ``ValueError`` naming the file.
    """
    _check_choice("iou_type", iou_type, IOU_TYPES)
    _check_choice("backend", backend, BACKENDS)
    coco_gt = load_coco_gt(gt, iou_types=(iou_type,))
    source = _source_name(results)
    anns = read_json(results) if isinstance(results, str | Path) else results
    anns = _prepare_results(anns, coco_gt, iou_type=iou_type, source=source)
    splits = resolve_class_split(class_split, coco_gt.dataset["categories"])
    ev = _run_cocoeval(coco_gt, anns, iou_type, img_ids, backend)
    cat_ids = [int(c) for c in ev.params.catIds]
    metrics: dict[str, Any] = _summarize(ev, None)
    for name, ids in splits.items():
        metrics[name] = _summarize(ev, [cat_ids.index(c) for c in ids if c in cat_ids])
    return metrics


def _run_cocoeval(
    coco_gt: COCO, anns: list[dict], iou_type: str, img_ids: Sequence[int] | None, backend: str
) -> Any:
    """A COCOeval (or COCOeval_faster) after ``evaluate()`` and ``accumulate()``."""
    if backend == "faster":
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster

        gt_f = FasterCOCO(_shallow_dataset_copy(coco_gt.dataset))
        dt_f = _load_results(gt_f, anns, FasterCOCO)
        ev: Any = COCOeval_faster(gt_f, dt_f, iou_type, print_function=lambda *a, **k: None)
    else:
        dt = _load_results(coco_gt, anns, COCO)
        ev = COCOeval(coco_gt, dt, iou_type)
    if img_ids is not None:
        ev.params.imgIds = sorted(int(i) for i in img_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _load_results(coco_gt: Any, anns: list[dict], coco_cls: type) -> Any:
    """``coco_gt.loadRes`` that also accepts an empty list (pycocotools indexes ``anns[0]``)."""
    if anns:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(anns)
    res = coco_cls()
    res.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        res.createIndex()
    return res


def _summarize(ev: Any, cat_index: list[int] | None) -> dict[str, float]:
    """The 12 ``COCOeval.summarize`` numbers (x100, NaN for -1) of an accumulated ``ev`` over
    the categories ``cat_index`` (positions in ``params.catIds``; None = all). Assumes the
    default areas all/small/medium/large and maxDets 1/10/100."""
    iou_thrs = np.asarray(ev.params.iouThrs)
    precision, recall = np.asarray(ev.eval["precision"]), np.asarray(ev.eval["recall"])
    if cat_index is not None:
        precision = precision[:, :, cat_index]
        recall = recall[:, cat_index]

    def mean(ap: bool, area: int = 0, max_det: int = 2, iou: float | None = None) -> float:
        s = precision[..., area, max_det] if ap else recall[..., area, max_det]
        if iou is not None:
            s = s[np.where(iou == iou_thrs)[0]]
        valid = s[s > -1]
        return float(np.mean(valid)) * 100.0 if valid.size else float("nan")

    values = [
        mean(True),
        mean(True, iou=0.5),
        mean(True, iou=0.75),
        mean(True, 1),
        mean(True, 2),
        mean(True, 3),
        mean(False, max_det=0),
        mean(False, max_det=1),
        mean(False),
        mean(False, 1),
        mean(False, 2),
        mean(False, 3),
    ]
    return dict(zip(METRIC_KEYS, values, strict=True))


# ----------------------------------------------------------------------------- loading
def load_coco_gt(gt: str | Path | COCO | dict, *, iou_types: Sequence[str] = IOU_TYPES) -> COCO:
    """A pycocotools ``COCO`` from a path, a dataset dict (not modified) or a ``COCO``
    (returned as is). Raises ``ValueError`` naming the file when required fields are missing."""
    if isinstance(gt, COCO):
        return gt
    name = _source_name(gt)
    data = read_json(gt) if isinstance(gt, str | Path) else gt
    _check_gt(data, name, iou_types)
    coco = COCO()
    coco.dataset = _shallow_dataset_copy(data)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _shallow_dataset_copy(data: dict) -> dict:
    """COCOeval writes into annotation dicts (``ignore``, mask RLEs): give it its own dicts."""
    out = dict(data)
    out["annotations"] = [dict(a) for a in data["annotations"]]
    return out


def _check_gt(data: Any, name: str, iou_types: Sequence[str]) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{name}: GT must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{name}: GT needs a list '{key}'")
    for img in data["images"]:
        if not isinstance(img, dict) or not {"id", "height", "width"} <= img.keys():
            raise ValueError(f"{name}: GT image entries need id, height and width: {img!r:.200}")
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat:
            raise ValueError(f"{name}: GT category entries need an id: {cat!r:.200}")
    need = {"id", "image_id", "category_id", "area", "iscrowd", "bbox"}
    need |= {"segmentation"} if "segm" in iou_types else set()
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or not need <= ann.keys():
            missing = sorted(need - set(ann)) if isinstance(ann, dict) else sorted(need)
            raise ValueError(f"{name}: GT annotation lacks {missing}: {ann!r:.200}")


def _prepare_results(
    anns: Any, coco_gt: COCO, *, iou_type: str, source: str
) -> list[dict[str, Any]]:
    """Validate results and return fresh dicts for pycocotools: segm -> RLE with str/bytes
    counts at the image's size and no bbox; bbox -> bbox (from the mask if absent)."""
    if not isinstance(anns, list):
        raise ValueError(
            f"{source}: results must be a JSON list of objects, got {type(anns).__name__}"
        )
    imgs, cats = coco_gt.imgs, set(coco_gt.getCatIds())
    bad_imgs: set[Any] = set()
    out = []
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            raise ValueError(f"{source}: result {i} is not an object: {a!r:.100}")
        for key in ("image_id", "category_id", "score"):
            if key not in a:
                raise ValueError(f"{source}: result {i} has no '{key}'")
        score = a["score"]
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
        ):
            raise ValueError(f"{source}: result {i} has a non-numeric score {score!r:.50}")
        if a["image_id"] not in imgs:
            bad_imgs.add(a["image_id"])
            continue
        if a["category_id"] not in cats:
            raise ValueError(
                f"{source}: result {i} has category_id {a['category_id']!r} "
                f"not in the GT categories {sorted(cats)[:20]}"
            )
        img = imgs[a["image_id"]]
        r = {"image_id": a["image_id"], "category_id": a["category_id"], "score": float(score)}
        segm = _result_rle(a, i, img, source, required=iou_type == "segm")
        box = _result_bbox(a, i, segm, source) if "bbox" in a or iou_type == "bbox" else None
        if iou_type == "segm":
            r["segmentation"] = segm
        else:
            r["bbox"] = box
        out.append(r)
    if bad_imgs:
        shown = sorted(bad_imgs, key=str)[:10]
        raise ValueError(f"{source}: {len(bad_imgs)} image id(s) not in the GT, e.g. {shown}")
    return out


def _result_rle(a: dict, i: int, img: dict, source: str, *, required: bool) -> dict | None:
    segm = a.get("segmentation")
    if segm is None:
        if required:
            raise ValueError(f"{source}: result {i} has no 'segmentation' (needed for segm)")
        return None
    h, w = int(img["height"]), int(img["width"])
    try:
        if isinstance(segm, list):  # polygons
            return mask_util.merge(mask_util.frPyObjects(segm, h, w))
        if isinstance(segm, dict):
            size = [int(s) for s in segm["size"]]
            if size != [h, w]:
                raise ValueError(f"RLE size {size} != image size {[h, w]}")
            if isinstance(segm["counts"], list):  # uncompressed RLE
                if sum(segm["counts"]) != h * w:
                    raise ValueError(f"RLE counts sum to {sum(segm['counts'])}, not {h * w}")
                return mask_util.frPyObjects({"size": size, "counts": segm["counts"]}, h, w)
            if isinstance(segm["counts"], str | bytes):
                return {"size": size, "counts": segm["counts"]}
    except (TypeError, KeyError, IndexError, ValueError) as e:
        raise ValueError(f"{source}: result {i} has a malformed segmentation ({e})") from e
    raise ValueError(f"{source}: result {i} has a malformed segmentation: {segm!r:.100}")


def _result_bbox(a: dict, i: int, rle: dict | None, source: str) -> list[float]:
    box = a.get("bbox")
    if box is None:
        if rle is None:
            raise ValueError(f"{source}: result {i} has neither 'bbox' nor 'segmentation'")
        return [float(v) for v in mask_util.toBbox(rle)]
    ok = isinstance(box, list | tuple) and len(box) == 4
    ok = ok and all(isinstance(v, int | float) and math.isfinite(v) for v in box)
    if not ok or box[2] < 0 or box[3] < 0:
        raise ValueError(
            f"{source}: result {i} has a malformed bbox {box!r:.100} "
            "(want [x, y, w, h] with w, h >= 0)"
        )
    return [float(v) for v in box]


def resolve_class_split(split: ClassSplit, categories: list[dict]) -> dict[str, list[int]]:
    """``"voc"`` -> {"voc": VOC ids, "non_voc": the rest}; a dict name -> ids or names -> ids;
    None / "none" -> {}. Categories absent from ``categories`` (the GT's) are left out."""
    if split is None or split == "none":
        return {}
    by_name = {c.get("name"): int(c["id"]) for c in categories}
    all_ids = [int(c["id"]) for c in categories]
    if split == "voc":
        voc = [by_name[n] for n in VOC_CLASS_NAMES if n in by_name]
        return {"voc": sorted(voc), "non_voc": sorted(set(all_ids) - set(voc))}
    if isinstance(split, str):
        raise ValueError(f"unknown class split '{split}' (use 'voc', 'none' or a dict)")
    out = {}
    for name, members in split.items():
        if name in METRIC_KEYS:
            raise ValueError(f"class split name '{name}' clashes with a metric key")
        ids = {
            by_name[m] if isinstance(m, str) else int(m)
            for m in members
            if (m in by_name if isinstance(m, str) else int(m) in all_ids)
        }
        out[name] = sorted(ids)
    return out


# ----------------------------------------------------------------------------- printing
def format_metrics_table(metrics: Mapping[str, Any]) -> str:
    """A fixed-width table, one row per (iou type, split). Accepts the flat dict of
    :func:`evaluate_coco` or ``{iou_type: flat dict}``; NaN prints as ``-``."""
    if any(k in metrics for k in METRIC_KEYS):
        groups: list[tuple[str, Mapping[str, Any]]] = [("", metrics)]
    else:
        groups = [(k, v) for k, v in metrics.items() if isinstance(v, Mapping)]
    rows = []
    for kind, flat in groups:
        rows.append((kind, "all", flat))
        rows += [(kind, k, v) for k, v in flat.items() if isinstance(v, Mapping)]
    w_kind = max([len("type")] + [len(r[0]) for r in rows])
    w_split = max([len("split")] + [len(r[1]) for r in rows])
    head = f"{'type':<{w_kind}}  {'split':<{w_split}} |" + "".join(f"{k:>7}" for k in METRIC_KEYS)
    lines = [head, "-" * len(head)]
    for kind, split, flat in rows:
        cells = "".join(f"{_fmt(flat.get(k)):>7}" for k in METRIC_KEYS)
        lines.append(f"{kind:<{w_kind}}  {split:<{w_split}} |{cells}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{float(v):.2f}"


def _source_name(x: Any) -> str:
    if isinstance(x, str | Path):
        return str(x)
    return "<GT COCO object>" if isinstance(x, COCO) else f"<in-memory {type(x).__name__}>"


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} '{value}' (choose from {', '.join(choices)})")
