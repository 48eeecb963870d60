"""inference.filtering: --conf / --max-det / --classes as a library function."""

from __future__ import annotations

import pytest
import torch

from instseg.inference.filtering import DetectionFilter, class_labels, filter_detections
from instseg.structures import Instances
from instseg.utils.errors import UserError


def _inst(scores: list[float], labels: list[int]) -> Instances:
    n = len(scores)
    boxes = torch.arange(n * 4, dtype=torch.float32).reshape(n, 4)
    return Instances(
        image_size=(8, 8), boxes=boxes, labels=torch.tensor(labels, dtype=torch.long),
        scores=torch.tensor(scores), masks=torch.zeros(n, 8, 8, dtype=torch.bool),
        track_ids=torch.arange(n),
    )  # fmt: skip


def test_conf_max_det_and_classes_keep_the_original_order() -> None:
    inst = _inst([0.9, 0.1, 0.5, 0.3, 0.95, 0.3], [0, 1, 1, 0, 1, 0])
    assert filter_detections(inst, conf=0.3).track_ids.tolist() == [0, 2, 3, 4, 5]
    top = filter_detections(inst, max_det=3)
    assert top.track_ids.tolist() == [0, 2, 4] and top.masks.shape == (3, 8, 8)
    assert filter_detections(inst, max_det=4).track_ids.tolist() == [0, 2, 3, 4]  # tie: first
    assert filter_detections(inst, classes=[0]).track_ids.tolist() == [0, 3, 5]
    both = filter_detections(inst, conf=0.2, max_det=2, classes=[0])
    assert both.track_ids.tolist() == [0, 3]
    assert filter_detections(inst) is inst  # nothing to drop: the same object


def test_detection_filter_validates_and_applies() -> None:
    inst = _inst([0.9, 0.1], [0, 1])
    assert len(DetectionFilter(conf=0.25)(inst)) == 1
    assert DetectionFilter().is_identity and not DetectionFilter(max_det=5).is_identity
    with pytest.raises(UserError, match="conf must be in"):
        DetectionFilter(conf=25)
    with pytest.raises(UserError, match="max_det must be at least 1"):
        DetectionFilter(max_det=0)


def test_class_labels_from_names_and_category_ids() -> None:
    names, ids = ["person", "car", "dog"], [1, 3, 18]
    assert class_labels(None, class_names=names, category_ids=ids) is None
    assert class_labels(["Dog", 1], class_names=names, category_ids=ids) == (0, 2)
    assert class_labels("car,18", class_names=names, category_ids=ids) == (1, 2)
    assert class_labels(["2"], class_names=names) == (1,)  # no category ids: label + 1
    with pytest.raises(UserError, match=r"unknown class 'cat'.*1=person, 3=car, 18=dog"):
        class_labels(["cat"], class_names=names, category_ids=ids)
    with pytest.raises(UserError, match="unknown class '2'"):
        class_labels([2], class_names=names, category_ids=ids)
