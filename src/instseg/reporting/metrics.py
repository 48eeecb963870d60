"""The evaluation section: every COCO metric group of ``metrics.json`` (as ``instseg eval`` /
``instseg train`` write it) in one table, and per-category and per-occlusion-level breakdowns
computed from ``results.json`` against the folder's ground truth
(:mod:`instseg.evaluation.breakdown`)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instseg.evaluation.breakdown import occlusion_level_metrics, per_category_metrics
from instseg.reporting.ground_truth import GroundTruth
from instseg.reporting.table import Table, format_value, metrics_table
from instseg.utils.io import read_json

__all__ = ["EvalSection", "read_metrics", "read_evaluation", "breakdown_tables", "IOU_TYPES"]

IOU_TYPES = ("segm", "bbox")
BREAKDOWN_KEYS = ("AP", "AP50", "AP75")
GROUP_NOTES = {
    "all": "all instances",
    "amodal": "masks scored against the amodal GT",
    "amodal_occluded": "amodal GT, occluded instances only",
    "occluded": "occluded instances only (others ignored)",
    "coco_occ": "COCO-OCC image subset",
}
log = logging.getLogger(__name__)


@dataclass
class EvalSection:
    source: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_metrics(path: Path) -> dict[str, Any] | None:
    """``metrics.json`` as written by the evaluation (``{"segm": {...}, "bbox": {...},
    <group>: {...}}``), None when the file is absent or holds something else."""
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or not any(isinstance(data.get(t), dict) for t in IOU_TYPES):
        return None
    return data


def read_evaluation(
    folder: Path, gt: GroundTruth | None, *, breakdown: bool = True
) -> EvalSection | None:
    """None when ``folder/metrics.json`` is not an evaluation's metrics file."""
    metrics = read_metrics(folder / "metrics.json")
    if metrics is None:
        return None
    section = EvalSection(source=str(folder / "metrics.json"))
    section.tables.append(groups_table(metrics))
    results = folder / "results.json"
    if not breakdown:
        section.notes.append("per-category / per-occlusion-level breakdown skipped")
    elif gt is None:
        section.notes.append(
            "no ground truth found next to the results: pass --gt ANNOTATIONS.json for the "
            "per-category and per-occlusion-level breakdown"
        )
    elif not results.is_file():
        section.notes.append(f"no {results.name}: no per-category breakdown")
    else:
        try:
            section.tables += breakdown_tables(gt, results)
        except ValueError as e:
            section.notes.append(f"breakdown not computed: {e}")
    return section


def groups_table(metrics: dict[str, Any]) -> Table:
    """One row per (group, IoU type, class split) of ``metrics``."""
    rows: list[tuple[list[str], dict[str, Any]]] = []
    groups = [("all", {t: metrics[t] for t in IOU_TYPES if isinstance(metrics.get(t), dict)})]
    groups += [(k, v) for k, v in metrics.items() if k not in IOU_TYPES and isinstance(v, dict)]
    for name, group in groups:
        for t in IOU_TYPES:
            m = group.get(t)
            if not isinstance(m, dict):
                continue
            rows.append(([name, t, "all"], m))
            rows += [([name, t, s], v) for s, v in m.items() if isinstance(v, dict)]
    note = "; ".join(f"{k}: {GROUP_NOTES[k]}" for k, _ in groups if k in GROUP_NOTES)
    if isinstance(metrics.get("coco_occ"), dict) and "num_images" in metrics["coco_occ"]:
        note += f" ({metrics['coco_occ']['num_images']} images)"
    return metrics_table(
        "COCO metrics (%)", rows, label_columns=["group", "IoU", "split"], note=note
    )


def breakdown_tables(gt: GroundTruth, results: Path) -> list[Table]:
    """Per-category and per-occlusion-level tables of ``results`` on ``gt``: GT instances,
    then AP / AP50 / AP75 for segm and for bbox (categories without test instances left out)."""
    res = read_json(results)
    if not isinstance(res, list) or (res and "image_id" not in res[0]):
        raise ValueError(f"{results}: not a COCO results list")
    per_cat = {t: per_category_metrics(gt.coco, res, iou_type=t) for t in IOU_TYPES}
    per_occ = {t: occlusion_level_metrics(gt.coco, res, iou_type=t) for t in IOU_TYPES}
    counts = Counter(
        int(a["category_id"]) for a in gt.coco["annotations"] if not a.get("iscrowd", 0)
    )
    names = list(per_cat["segm"])  # "all", then the categories in GT order
    cat_ids = [None] + [int(c["id"]) for c in gt.coco["categories"]]
    columns = ["instances", *(f"{t} {k}" for t in IOU_TYPES for k in BREAKDOWN_KEYS)]
    cats = Table("Per category (%)", ["category", *columns])
    left_out = 0
    for name, cid in zip(names, cat_ids, strict=True):
        n = sum(counts.values()) if cid is None else counts.get(cid, 0)
        if n == 0 and cid is not None:
            left_out += 1
            continue
        cats.rows.append([name, str(n), *_cells(per_cat, name)])
    src = f"{results.name} against {gt.path}"
    cats.note = src + (
        f"; {left_out} categories without test instances left out" if left_out else ""
    )
    tables = [cats]
    if per_occ["segm"]:
        occ = Table(
            "Per occlusion level (%)",
            ["occlusion ratio", *columns],
            note=f"{src}; occlusion ratio = 1 - visible / amodal area; for each level the "
            "instances of the other levels are ignored (crowd regions)",
        )
        for name, m in per_occ["segm"].items():
            occ.rows.append([name, str(m["instances"]), *_cells(per_occ, name)])
        tables.append(occ)
    return tables


def _cells(by_type: dict[str, dict[str, dict[str, Any]]], name: str) -> list[str]:
    return [format_value(by_type[t][name].get(k)) for t in IOU_TYPES for k in BREAKDOWN_KEYS]
