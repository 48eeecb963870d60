"""One owner for the weights-file format and the table of shipped weights.

A weights file is ``{"model": state_dict, "meta": dict}``, written atomically and read with
``torch.load(weights_only=True)`` only (untrusted pickles are refused). :class:`WeightsMeta` is
the typed ``meta`` of every kind of file:

=============== ============================================== ================================
``task``        ``model`` (how to rebuild it)                  written by
=============== ============================================== ================================
``image``       :class:`~instseg.models.build.ModelConfig`     ``instseg train`` / ``demo``
``video``       :class:`~instseg.models.build.VideoModelConfig` the video recipe (PCAN)
``propagation`` ``{"channels", "hidden"}``                     the propagation recipe
``voin``        ``{"variant", "canvas_size", "format"}``       the inpainting recipe
=============== ============================================== ================================

plus classes, test sizes, whether the networks are trained, the training precision and free
provenance (``training``: iterations, seed, sequences, ...). Files written before this module
(flat propagation / VOIN layouts, image files without ``task``) still load: see
:meth:`WeightsMeta.from_dict`. Image and video ``model`` dicts without ``roi_aligned`` read as
``roi_aligned: False``: those models were trained with torchvision's legacy mask RoI pooling.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instseg.utils.errors import InvalidInputError

__all__ = [
    "SHIPPED",
    "TASKS",
    "VOIN_FORMAT",
    "WeightsMeta",
    "read_weights_file",
    "save_weights_file",
    "shipped_weights",
    "shipped_image_model",
    "SHIPPED_IMAGE_MODELS",
]

TASKS = ("image", "video", "propagation", "voin")
VOIN_FORMAT = "instseg-voin-1"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
# the shipped default of each task (each with a model card <name>.md beside it)
SHIPPED: dict[str, Path] = {
    "image": WEIGHTS_DIR / "objects_default.pt",  # instseg predict (class-agnostic objects)
    "video": WEIGHTS_DIR / "pcan_default.pt",  # instseg track
    "propagation": WEIGHTS_DIR / "propagation_default.pt",  # instseg propagate
    "voin": WEIGHTS_DIR / "voin_default.pt",  # instseg inpaint
}
# shipped image models by name (``instseg predict --model NAME``); "objects" is SHIPPED["image"]
SHIPPED_IMAGE_MODELS: dict[str, Path] = {
    "objects": SHIPPED["image"],  # Mask R-CNN head (the default)
    "bcnet": WEIGHTS_DIR / "bcnet_default.pt",  # the same recipe with BCNet's bilayer GCN head
}


@dataclass(frozen=True)
class WeightsMeta:
    """The ``meta`` of a weights file.

    - ``task``: one of :data:`TASKS`
    - ``model``: plain dict the task's builder rebuilds the networks from (see module docstring)
    - ``num_classes``, ``category_ids`` (dataset ids, in label order), ``class_names``
    - ``test_min_size`` / ``max_size``: test-time resize of image/video models (None: not set)
    - ``trained``: False for a file of untrained networks (e.g. a packed smoke run)
    - ``precision``: :func:`instseg.utils.precision.precision_info` of the training run
    - ``training``: provenance (iterations, seed, data, sequences ...), plain values
    """

    task: str
    model: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 0
    category_ids: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()
    test_min_size: int | None = None
    max_size: int | None = None
    trained: bool = True
    precision: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"weights task must be one of {TASKS}, got {self.task!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (what ``torch.load(weights_only=True)`` reads back)."""
        d = dataclasses.asdict(self)
        d["category_ids"], d["class_names"] = list(self.category_ids), list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "weights") -> WeightsMeta:
        """Typed meta of a file; also reads the layouts written before this class existed."""
        if not isinstance(d, dict):
            raise InvalidInputError(f"{where}: 'meta' must be a dict, got {type(d).__name__}")
        d = dict(d)
        if d.get("kind") == "propagation_embedding":  # flat layout of the first releases
            d.pop("kind")
            d["task"] = "propagation"
            d["model"] = {"channels": d.pop("channels"), "hidden": d.pop("hidden")}
        task = d.get("task", "image")
        if task == "voin" and "variant" in d and "model" not in d:  # flat VOIN layout
            d["model"] = {k: d.pop(k) for k in ("variant", "canvas_size", "format") if k in d}
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}  # old provenance keys: kept
        known["task"] = task
        if task in ("image", "video"):  # trained before aligned mask RoI pooling existed
            known["model"] = {"roi_aligned": False, **dict(known.get("model") or {})}
        known["training"] = {**extra, **dict(known.get("training") or {})}
        for key in ("category_ids", "class_names"):
            known[key] = tuple(known.get(key) or ())
        try:
            return cls(**known)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"{where}: bad weights meta: {e}") from None


def save_weights_file(
    module: nn.Module, path: str | Path, meta: WeightsMeta, *, half: bool = False
) -> Path:
    """Write ``module``'s state and ``meta`` atomically (fp16 floating tensors with ``half``;
    they are cast back to the parameters' dtype on load). Returns ``path``."""
    from instseg.engine.checkpoint import save_weights

    return save_weights(module, path, half=half, meta=meta.to_dict())


def read_weights_file(
    path: str | Path, *, task: str | None = None
) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """-> (state_dict, meta). Refuses files that need unpickling of arbitrary objects and, with
    ``task``, files of another task (the error names the file and both tasks)."""
    from instseg.engine.checkpoint import load_checkpoint_file

    obj = load_checkpoint_file(path)
    if not isinstance(obj, dict) or "model" not in obj:
        raise InvalidInputError(
            f"{path}: not an instseg weights file (expected keys 'model' and 'meta')"
        )
    meta = WeightsMeta.from_dict(obj.get("meta") or {}, where=str(path))
    if task is not None and meta.task != task:
        raise InvalidInputError(f"{path}: weights are for task '{meta.task}', not '{task}'")
    return obj["model"], meta


def shipped_image_model(name_or_path: str) -> Path:
    """A shipped image model by name (:data:`SHIPPED_IMAGE_MODELS`), or ``name_or_path`` as a
    weights file path. Raises :class:`MissingFileError` naming what was asked for when the
    file does not exist."""
    from instseg.utils.errors import MissingFileError

    if name_or_path in SHIPPED_IMAGE_MODELS:
        p = SHIPPED_IMAGE_MODELS[name_or_path]
        if not p.is_file():
            raise MissingFileError(f"shipped model '{name_or_path}' not found: {p} is missing")
        return p
    p = Path(name_or_path)
    if not p.is_file():
        names = ", ".join(sorted(SHIPPED_IMAGE_MODELS))
        raise MissingFileError(
            f"{name_or_path}: no such weights file (and not a shipped model name: {names})"
        )
    return p


def shipped_weights(task: str) -> Path:
    """Path of the shipped default for ``task`` (it may not exist in a source checkout)."""
    if task not in SHIPPED:
        raise ValueError(f"no shipped weights for task {task!r}; tasks: {sorted(SHIPPED)}")
    return SHIPPED[task]
