"""Finding the test ground truth (and its images) that a run or eval folder was scored on.

Search order: an explicit ``gt`` path; the config's ``data.test_json`` (else
``data.train_json``, as ``instseg train`` falls back); the generated synthetic test split
(``<cache_dir or folder/data>/test_*/annotations.json``, one match); the folder's
``gt_visible.json`` (the visible-mask GT the occlusion evaluation writes). Any layout is
converted to plain COCO by :func:`~instseg.evaluation.amodal.to_coco_gt`; a file that already is
plain COCO is used as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instseg.data.coco import detect_layout
from instseg.evaluation.amodal import to_coco_gt
from instseg.utils.io import read_json

__all__ = ["GroundTruth", "find_ground_truth"]


@dataclass
class GroundTruth:
    """``coco``: the plain COCO GT dict (visible masks, ``occlusion_ratio`` per annotation where
    the source has amodal masks); ``path``: where it was read; ``image_root``: the folder the
    images' ``file_name`` are relative to, None when not found."""

    coco: dict[str, Any]
    path: Path
    image_root: Path | None

    def image_path(self, image_id: int) -> Path | None:
        if self.image_root is None:
            return None
        im = self.images.get(int(image_id))
        p = self.image_root / str(im["file_name"]) if im else None
        return p if p is not None and p.is_file() else None

    @property
    def images(self) -> dict[int, dict[str, Any]]:
        return {int(im["id"]): im for im in self.coco.get("images", [])}


def find_ground_truth(
    folder: Path, config: dict[str, Any] | None, gt: str | Path | None = None
) -> GroundTruth | None:
    """The GT of ``folder`` (see the module docstring) or None; a GT file that exists but is
    not COCO raises ``ValueError`` naming it."""
    data = (config or {}).get("data") or {}
    candidates: list[tuple[Path, list[Path]]] = []  # (GT file, image roots to try)
    roots = [Path(p) for p in (data.get("test_root"), data.get("train_root")) if p]
    if gt is not None:
        candidates.append((Path(gt), [Path(gt).parent, *roots]))
    for key in ("test_json", "train_json"):
        if data.get(key):
            candidates.append((Path(data[key]), [*roots, Path(data[key]).parent]))
            break
    synthetic = _synthetic_test_split(folder, data)
    if synthetic is not None:
        candidates.append((synthetic, [synthetic.parent]))
    if (folder / "gt_visible.json").is_file():
        candidates.append((folder / "gt_visible.json", roots))
    for path, image_roots in candidates:
        if not path.is_file():
            if gt is not None and path == Path(gt):
                raise ValueError(f"{path}: no such GT file")
            continue
        raw = read_json(path)
        if not isinstance(raw, dict) or "images" not in raw or "annotations" not in raw:
            raise ValueError(f"{path}: not a COCO annotation file (no 'images'/'annotations')")
        plain = detect_layout(raw.get("annotations") or []) == "coco"
        coco = raw if plain else to_coco_gt(raw, target="visible")
        root = _image_root(coco, image_roots)
        return GroundTruth(coco=coco, path=path, image_root=root)
    return None


def _synthetic_test_split(folder: Path, data: dict[str, Any]) -> Path | None:
    cache = Path(data["cache_dir"]) if data.get("cache_dir") else folder / "data"
    found = sorted(cache.glob("test_*/annotations.json")) if cache.is_dir() else []
    return found[0] if len(found) == 1 else None


def _image_root(coco: dict[str, Any], roots: list[Path]) -> Path | None:
    images = coco.get("images") or []
    if not images:
        return None
    first = str(images[0].get("file_name", ""))
    for r in roots:
        if first and (r / first).is_file():
            return r
    return None
