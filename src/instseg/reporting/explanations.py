"""The mask-head explanation section: the per-RoI panels ``instseg predict --explain`` writes to
``explain/<image>_roi<k>.png`` (:func:`instseg.inference.explain.save_explanations`): for BCNet
heads the occluder contour / mask and occludee contour / mask maps, for CPMask heads the
boundary and affinity maps, then the final mask."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from instseg.reporting.embed import image_file_data_uri

__all__ = ["ExplainGroup", "read_explanations"]

PANEL = re.compile(r"^(?P<name>.+)_roi(?P<rank>\d+)$")


@dataclass
class ExplainGroup:
    image: str
    panels: list[tuple[int, str]]  # (RoI rank, PNG data URI)


def read_explanations(folder: Path, *, max_images: int = 8) -> list[ExplainGroup]:
    """Panels of ``folder/explain`` grouped by image (sorted), [] when there are none."""
    d = folder / "explain"
    if not d.is_dir():
        return []
    groups: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for f in sorted(d.glob("*.png")):
        m = PANEL.match(f.stem)
        if m:
            groups[m["name"]].append((int(m["rank"]), f))
    return [
        ExplainGroup(
            name,
            [(rank, image_file_data_uri(f, max_side=1200, fmt="png")) for rank, f in sorted(ps)],
        )
        for name, ps in sorted(groups.items())[:max_images]
    ]
