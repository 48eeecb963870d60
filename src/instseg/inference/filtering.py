"""Which detections a user sees: a confidence threshold, a cap on their number, some classes.

Evaluation keeps every detection down to the model's own low threshold (AP needs the tail);
showing or saving them for a person does not (Ultralytics' defaults: ``conf=0.25``,
``max_det=300``; ours: 0.25 and 100). :class:`DetectionFilter` is that choice as data;
:class:`~instseg.inference.predictor.ImagePredictor` and
:class:`~instseg.inference.video_predictor.VideoPredictor` apply it to their outputs (default:
keep everything, as before).

keep = DetectionFilter(conf=0.25, max_det=100, classes=class_labels(["person", 3],
                       class_names=names, category_ids=ids))
inst = keep(inst)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from instseg.structures import Instances
from instseg.utils.errors import InvalidInputError

__all__ = ["DetectionFilter", "class_labels", "filter_detections"]


def filter_detections(
    inst: Instances,
    *,
    conf: float = 0.0,
    max_det: int | None = None,
    classes: Sequence[int] | None = None,
) -> Instances:
    """Keep instances with ``score >= conf`` whose label (contiguous index, 0..K-1) is in
    ``classes`` (None: all), then the ``max_det`` highest-scoring (None: all; ties keep the
    earlier one). The kept instances stay in their original order. Instances without scores
    are filtered by class only."""
    keep = torch.ones(len(inst), dtype=torch.bool)
    if inst.scores is not None and conf > 0:
        keep &= inst.scores.float() >= conf
    if classes is not None:
        wanted = torch.as_tensor(list(classes), dtype=inst.labels.dtype)
        keep &= torch.isin(inst.labels, wanted)
    idx = torch.nonzero(keep).flatten()
    if max_det is not None and len(idx) > max_det:
        if inst.scores is None:
            idx = idx[: max(max_det, 0)]
        else:
            scores = inst.scores[idx].float()
            order = torch.sort(scores, descending=True, stable=True).indices[: max(max_det, 0)]
            idx = torch.sort(idx[order]).values
    if len(idx) == len(inst):
        return inst
    return inst[idx]


@dataclass(frozen=True)
class DetectionFilter:
    """``conf`` (minimum score), ``max_det`` (None: no cap), ``classes`` (contiguous label
    indices to keep; None: all). Calling it applies :func:`filter_detections`."""

    conf: float = 0.0
    max_det: int | None = None
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf <= 1.0:
            raise InvalidInputError(f"conf must be in [0, 1], got {self.conf}")
        if self.max_det is not None and self.max_det < 1:
            raise InvalidInputError(f"max_det must be at least 1, got {self.max_det}")

    def __call__(self, inst: Instances) -> Instances:
        return filter_detections(inst, conf=self.conf, max_det=self.max_det, classes=self.classes)

    @property
    def is_identity(self) -> bool:
        return self.conf <= 0 and self.max_det is None and self.classes is None


def class_labels(
    spec: Sequence[int | str] | str | None,
    *,
    class_names: Sequence[str],
    category_ids: Sequence[int] = (),
) -> tuple[int, ...] | None:
    """User class choices -> contiguous label indices (None for None / empty).

    ``spec`` items (or one comma-separated string) are class names (case-insensitive) or
    category ids as written in results files (``category_ids[label]``; without category ids
    ``label + 1``, the ids ``instseg predict`` writes then). An unknown item raises
    :class:`~instseg.utils.errors.InvalidInputError` listing the valid names and ids.
    """
    if spec is None:
        return None
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s for s in items if s != ""]
    if not items:
        return None
    ids = list(category_ids) or list(range(1, len(class_names) + 1))
    by_name = {str(n).lower(): i for i, n in enumerate(class_names)}
    by_id = {int(c): i for i, c in enumerate(ids)}
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if text.lstrip("-").isdigit() and int(text) in by_id:
            out.append(by_id[int(text)])
        elif text.lower() in by_name:
            out.append(by_name[text.lower()])
        else:
            valid = ", ".join(f"{c}={n}" for c, n in zip(ids, class_names, strict=False))
            raise InvalidInputError(
                f"classes: unknown class {text!r} (give a category id or a name; this model has "
                f"{valid or 'no class names'})"
            )
    return tuple(sorted(set(out)))
