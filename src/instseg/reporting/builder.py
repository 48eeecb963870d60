"""``build_report(folder)``: detect what an instseg output folder holds and write one
self-contained HTML page about it.

Kinds of folders (several may apply to one folder; each gives the sections it can):

- a training run (``instseg train`` / ``instseg demo``): ``config.yaml`` (first line the
  ``# precision:`` comment), ``metrics.jsonl`` or ``tb/`` events -> config, summary, curves;
- an evaluation (``metrics.json`` with ``segm`` / ``bbox``, from training or ``instseg eval``)
  -> metric tables, plus per-category / per-occlusion-level breakdowns from ``results.json``
  when the ground truth is found (:mod:`instseg.reporting.ground_truth`, or ``gt=``);
- image predictions (COCO ``results.json`` plus the GT's images or ``vis/`` overlays) -> a grid
  with per-class / per-instance toggles; ``explain/`` panels (BCNet occluder / occludee maps);
- ``instseg track`` / ``propagate`` / video ``predict`` outputs (MP4s, ``masks/``,
  ``tracks.txt``) and ``instseg inpaint`` outputs (``frames/``, ``amodal/``).

Pictures are embedded as ``data:`` URIs, so the page is a single file that can be copied or
mailed; MP4 files are linked by a path relative to the page (too big to embed). The HTML lives
in Jinja2 templates (``templates/``), the Python side only gathers data.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from instseg.reporting.explanations import ExplainGroup, read_explanations
from instseg.reporting.ground_truth import GroundTruth, find_ground_truth
from instseg.reporting.metrics import EvalSection, read_evaluation
from instseg.reporting.predictions import PredictionGrid, read_predictions
from instseg.reporting.training import TrainingSection, read_training
from instseg.reporting.video import InpaintSection, VideoSection, read_inpaint, read_video_outputs
from instseg.utils.io import atomic_write

__all__ = ["ReportError", "Report", "collect_report", "render_report", "build_report"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFAULT_NAME = "report.html"


class ReportError(ValueError):
    """The folder cannot be reported on (missing, empty, or nothing instseg wrote)."""


@dataclass
class Report:
    folder: Path
    page: Path
    training: TrainingSection | None = None
    evaluation: EvalSection | None = None
    predictions: PredictionGrid | None = None
    explanations: list[ExplainGroup] = field(default_factory=list)
    video: VideoSection | None = None
    inpaint: InpaintSection | None = None
    ground_truth: GroundTruth | None = None

    @property
    def sections(self) -> list[tuple[str, str]]:
        """(anchor, title) of the sections present, in page order."""
        out = []
        for anchor, title, present in (
            ("training", "Training", self.training),
            ("evaluation", "Evaluation", self.evaluation),
            ("predictions", "Predictions", self.predictions),
            ("explain", "Mask-head maps", self.explanations),
            ("video", self.video.title if self.video else "", self.video),
            ("inpaint", "Inpainting", self.inpaint),
        ):
            if present:
                out.append((anchor, title))
        return out


def collect_report(
    folder: str | Path,
    *,
    page: str | Path | None = None,
    gt: str | Path | None = None,
    score_thresh: float = 0.4,
    max_images: int = 12,
    breakdown: bool = True,
) -> Report:
    """Everything the page shows about ``folder``; raises :class:`ReportError` when the folder
    is missing, empty or holds nothing recognised, ``ValueError`` naming the file for a file
    that is there but broken."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such folder")
    if not any(folder.iterdir()):
        raise ReportError(f"{folder}: the folder is empty")
    page = Path(page) if page is not None else folder / DEFAULT_NAME
    rep = Report(folder=folder, page=page)
    rep.training = read_training(folder)
    config = rep.training.config if rep.training else None
    rep.ground_truth = find_ground_truth(folder, config, gt)
    rep.evaluation = read_evaluation(folder, rep.ground_truth, breakdown=breakdown)
    rep.predictions = read_predictions(
        folder, rep.ground_truth, score_thresh=score_thresh, max_images=max_images
    )
    rep.explanations = read_explanations(folder)
    rep.inpaint = read_inpaint(folder, page)
    rep.video = read_video_outputs(folder, page)
    if not rep.sections:
        raise ReportError(
            f"{folder}: nothing to report (no config.yaml, metrics.json, results.json, explain/, "
            "MP4, masks/ or inpainting frames/ from an instseg command)"
        )
    return rep


def render_report(rep: Report) -> str:
    """The HTML page of ``rep`` (Jinja2, autoescaped)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    from instseg import __version__

    return env.get_template("report.html.j2").render(
        rep=rep,
        version=__version__,
        generated=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    )


def build_report(folder: str | Path, *, out: str | Path | None = None, **kw: Any) -> Path:
    """Write the report of ``folder`` to ``out`` (default ``folder/report.html``) and return
    its path; keyword arguments as :func:`collect_report`."""
    rep = collect_report(folder, page=out, **kw)
    rep.page.parent.mkdir(parents=True, exist_ok=True)
    html = render_report(rep)
    return atomic_write(rep.page, lambda p: p.write_text(html, encoding="utf-8"))
