"""Class splits (voc / non_voc, synthetic base / novel) and the has_mask transform."""

from __future__ import annotations

import pytest
import torch

from instseg.data.class_split import SPLITS, VOC_CLASSES, PartialMaskSupervision, resolve_split
from instseg.data.synthetic import SceneConfig, scene_categories
from instseg.data.transforms import Compose, RandomHorizontalFlip
from instseg.evaluation.coco import VOC_CLASS_NAMES
from instseg.models.heads.commonality import CommonalityMaskHead
from instseg.models.zoo import effl0_fcos_maskrcnn
from instseg.structures import Instances
from instseg.structures.batch import Batch, collate_images

# a COCO-like category list: the 20 VOC classes at their COCO ids plus four non-VOC ones
COCO_IDS = {
    "person": 1, "bicycle": 2, "car": 3, "motorcycle": 4, "airplane": 5, "bus": 6, "train": 7,
    "boat": 9, "bird": 16, "cat": 17, "dog": 18, "horse": 19, "sheep": 20, "cow": 21,
    "bottle": 44, "chair": 62, "couch": 63, "potted plant": 64, "dining table": 67, "tv": 72,
    "truck": 8, "traffic light": 10, "laptop": 73, "toothbrush": 90,
}  # fmt: skip
CATEGORIES = [{"id": i, "name": n} for n, i in sorted(COCO_IDS.items(), key=lambda t: t[1])]
VOC_IDS = sorted(COCO_IDS[n] for n in VOC_CLASSES)
NON_VOC_IDS = [8, 10, 73, 90]


def test_voc_names_are_the_20_pascal_classes_as_the_evaluator_spells_them():
    assert len(set(VOC_CLASSES)) == 20
    assert set(VOC_CLASSES) == set(VOC_CLASS_NAMES)


def test_coco_directions():
    assert resolve_split(CATEGORIES, "voc->non_voc") == (VOC_IDS, NON_VOC_IDS)
    assert resolve_split(CATEGORIES, "non_voc->voc") == (NON_VOC_IDS, VOC_IDS)
    assert resolve_split(CATEGORIES, "voc->non-voc") == (VOC_IDS, NON_VOC_IDS)
    assert resolve_split(CATEGORIES, "non-voc -> voc") == (NON_VOC_IDS, VOC_IDS)
    # a COCO subset: missing VOC classes are simply absent from the split
    subset = [c for c in CATEGORIES if c["name"] in ("cat", "dog", "laptop")]
    assert resolve_split(subset, "non_voc->voc") == ([73], [17, 18])


def test_synthetic_base_novel_from_the_split_tags():
    cfg = SceneConfig()
    cats = scene_categories(cfg)
    base, novel = resolve_split(cats, "base->novel")
    names = {c["id"]: c["name"] for c in cats}
    assert {names[i] for i in novel} == set(cfg.novel_classes) & set(cfg.shape_kinds)
    assert set(base) | set(novel) == set(names) and not set(base) & set(novel)
    assert base and novel


def test_bad_splits_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown class split"):
        resolve_split(CATEGORIES, "voc->coco")
    with pytest.raises(ValueError, match="split=None"):
        resolve_split(CATEGORIES, "base->novel")
    with pytest.raises(ValueError, match="no novel category"):
        resolve_split([c for c in CATEGORIES if c["name"] in VOC_CLASSES], "voc->non_voc")
    with pytest.raises(ValueError, match="needs 'id' and 'name'"):
        resolve_split([{"id": 1}], "voc->non_voc")
    assert SPLITS == ("voc->non_voc", "non_voc->voc", "base->novel")


def _instances(labels: list[int]) -> Instances:
    n = len(labels)
    masks = torch.zeros(n, 32, 40, dtype=torch.bool)
    boxes = []
    for i in range(n):
        x0, y0 = 2 + 6 * i, 3 + 4 * i
        masks[i, y0 : y0 + 12, x0 : x0 + 14] = True
        boxes.append([x0, y0, x0 + 14, y0 + 12])
    return Instances(
        image_size=(32, 40),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
        labels=torch.tensor(labels, dtype=torch.long),
        masks=masks,
        extra={"iscrowd": torch.zeros(n, dtype=torch.long)},
    )


def test_partial_mask_supervision_marks_base_instances_only():
    # dataset label order: category ids [8, 17, 18, 73] -> labels 0..3; base = non-VOC (8, 73)
    t = PartialMaskSupervision.from_category_ids([8, 17, 18, 73], [8, 73])
    assert t.base_labels == [0, 3]
    image = torch.zeros(3, 32, 40, dtype=torch.uint8)
    _, out = t(image, _instances([0, 1, 3, 2]))
    assert out.has_mask.tolist() == [True, False, True, False]
    assert "iscrowd" in out.extra  # other extras kept
    flip = Compose([RandomHorizontalFlip(p=1.0), t])
    _, flipped = flip(image, _instances([2, 0]), generator=torch.Generator().manual_seed(0))
    assert flipped.has_mask.tolist() == [False, True]
    _, empty = t(image, _instances([]))
    assert empty.has_mask.shape == (0,) and empty.has_mask.dtype == torch.bool
    with pytest.raises(ValueError, match="not among"):
        PartialMaskSupervision.from_category_ids([8, 17], [8, 99])


class _Recording(CommonalityMaskHead):
    def loss(self, outputs, targets):
        self.seen = targets
        return super().loss(outputs, targets)


def test_segmenter_passes_has_mask_to_the_mask_head():
    torch.manual_seed(0)
    model = effl0_fcos_maskrcnn(num_classes=4, pretrained=False, mask_head=_Recording)
    mark = PartialMaskSupervision(base_labels=[0, 3])
    images, targets = [], []
    for labels in ([0, 1, 3], [2]):
        image, inst = mark(torch.zeros(3, 32, 40, dtype=torch.uint8), _instances(labels))
        images.append(image.float() + 255 * torch.rand(3, 32, 40))
        targets.append(inst)
    padded, sizes = collate_images(images, 32)
    losses = model.loss(Batch(images=padded, image_sizes=sizes, targets=targets))
    seen = model.mask_head.seen
    base = torch.isin(seen.labels, torch.tensor([0, 3]))
    assert torch.equal(seen.has_mask, base) and base.any() and (~base).any()
    assert {"loss_mask", "loss_boundary", "loss_affinity"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
