"""Seeded K-shot training subsets for few-shot instance segmentation (survey ch. 4.3.3).

Protocol (Table 4.2, after Meta R-CNN): base classes keep all their training data, each novel
class gets only K (10 or 20) annotated instances, boxes and masks. :func:`sample_k_shot` writes
such a subset of a COCO ground-truth file; ``keep_base=False`` is the paper's "no base" setting
(novel classes only).

Sampling, per novel class c (independently, in category-id order; the image order is a
permutation drawn from ``numpy.random.default_rng([seed, c])``, so one class's draw does not
depend on the others):

1. walk the images that contain c (non-crowd) in that order and take an image whole (all of
   its c instances) when it still fits: count(c) + n_c(image) <= K; stop at K;
2. if c is still short of K after the walk (every remaining image holds too many), the first
   remaining image is added with a seeded random subset of just the missing number of its c
   instances (its other c objects are left unannotated).

So every novel class ends with exactly min(K, its number of instances) annotations. For a
selected image only the annotations of the classes it was selected for are kept: a novel object
in an image that was not chosen for its class stays unannotated, as in the per-class shot lists
of Meta R-CNN / TFA. Crowd annotations of novel classes are dropped (they are never shots).

With ``keep_base`` the output keeps every image that has a base-class annotation, with all its
base annotations (crowd included), plus the novel shots; novel objects in base images that were
not drawn are unannotated (unavoidable with at most K instances per novel class). Categories,
``info`` and ``licenses`` are copied unchanged (the label order stays the same); images and
annotations keep their order in the input. A ``"few_shot"`` key records the settings and the
per-class counts.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from instseg.utils.io import read_json, require_lists

__all__ = ["sample_k_shot", "SHOTS"]

#: the shot counts of survey Table 4.2
SHOTS: tuple[int, ...] = (10, 20)


def sample_k_shot(
    coco_json: dict[str, Any] | str | Path,
    *,
    novel_ids: Iterable[int],
    k: int,
    seed: int,
    keep_base: bool = True,
) -> dict[str, Any]:
    """A K-shot COCO dict: at most ``k`` (exactly ``k`` when the data has that many) non-crowd
    annotations per novel category; see the module docstring for the sampling rule.

    Args:
        coco_json: a COCO ground-truth dict or the path of its JSON file.
        novel_ids: COCO category ids of the novel classes (e.g. ``resolve_split(...)[1]``).
        k: shots per novel class (>= 1).
        seed: fixes the draw; the same inputs and seed give the same output.
        keep_base: keep all base-class annotations and their images; False: "no base".

    Raises ValueError (naming the file when given a path) for non-COCO input, ``k < 1`` or
    novel ids that are not categories. Annotations whose image id is unknown are skipped,
    counted in ``result["few_shot"]["skipped_annotations"]`` with one warning.
    """
    source = f"{coco_json}: " if isinstance(coco_json, (str, Path)) else ""
    data = read_json(coco_json) if isinstance(coco_json, (str, Path)) else coco_json
    images, anns, cat_ids = _check(data, source)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    novel = sorted({int(c) for c in novel_ids})
    unknown = [c for c in novel if c not in cat_ids]
    if unknown:
        raise ValueError(f"{source}novel category ids {unknown} are not in 'categories'")
    if not novel:
        raise ValueError("novel_ids is empty")
    image_ids = {int(im["id"]) for im in images}
    skipped = sum(1 for a in anns if int(a["image_id"]) not in image_ids)
    if skipped:
        warnings.warn(
            f"{source}{skipped} annotations refer to unknown image ids; skipped", stacklevel=2
        )
    anns = [a for a in anns if int(a["image_id"]) in image_ids]

    keep_ann: set[int] = set()  # positions in `anns`
    counts: dict[int, int] = {}
    novel_set = set(novel)
    for c in novel:
        chosen = _sample_class(anns, c, k, seed)
        keep_ann.update(chosen)
        counts[c] = len(chosen)
    if keep_base:
        keep_ann.update(i for i, a in enumerate(anns) if int(a["category_id"]) not in novel_set)
    kept = [a for i, a in enumerate(anns) if i in keep_ann]
    used_images = {int(a["image_id"]) for a in kept}
    out = {key: v for key, v in data.items() if key not in ("images", "annotations")}
    out["images"] = [im for im in images if int(im["id"]) in used_images]
    out["annotations"] = kept
    out["few_shot"] = {
        "k": k,
        "seed": seed,
        "keep_base": keep_base,
        "novel_ids": novel,
        "novel_counts": {str(c): n for c, n in counts.items()},
        "skipped_annotations": skipped,
    }
    return out


def _sample_class(anns: list[dict[str, Any]], c: int, k: int, seed: int) -> list[int]:
    """Positions in ``anns`` of the shots of class ``c`` (see the module docstring)."""
    per_image: dict[int, list[int]] = defaultdict(list)
    for i, a in enumerate(anns):
        if int(a["category_id"]) == c and not a.get("iscrowd", 0):
            per_image[int(a["image_id"])].append(i)
    if not per_image:
        return []
    rng = np.random.default_rng([seed, c])
    order = [sorted(per_image)[j] for j in rng.permutation(len(per_image))]
    chosen: list[int] = []
    rest: list[int] = []
    for im in order:
        n = len(per_image[im])
        if len(chosen) == k:
            break
        if len(chosen) + n <= k:
            chosen += per_image[im]
        else:
            rest.append(im)
    if len(chosen) < k and rest:  # no whole image fits: a random part of the first one left
        pool = per_image[rest[0]]
        pick = rng.choice(len(pool), size=k - len(chosen), replace=False)
        chosen += [pool[j] for j in sorted(pick)]
    return chosen


def _check(data: Any, source: str) -> tuple[list[dict], list[dict], set[int]]:
    require_lists(data, source[:-2] or "<COCO dict>", ("images", "annotations", "categories"))
    for key, need in (("images", ("id",)), ("annotations", ("image_id", "category_id"))):
        for i, item in enumerate(data[key]):
            if not isinstance(item, dict) or any(f not in item for f in need):
                raise ValueError(f"{source}{key}[{i}] needs keys {list(need)}")
    cats = set()
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or "id" not in c:
            raise ValueError(f"{source}categories[{i}] has no key 'id'")
        cats.add(int(c["id"]))
    return data["images"], data["annotations"], cats
