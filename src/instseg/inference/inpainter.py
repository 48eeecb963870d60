"""Inpainter: the VOIN networks plus every inference setting, run over videos on disk in
overlapping temporal windows (paper Sect. 5.4; the pipeline itself is
:class:`~instseg.models.inpainting.voin.VOIN`).

Weights file (one file for the three networks, read with ``torch.load(weights_only=True)``
only, written by :func:`save_voin_weights` through the engine's ``save_weights``)::

    {"model": state_dict of ModuleDict(shape_net=..., flow_net=..., generator=...)  (fp16),
     "meta":  {"task": "voin", "format": "instseg-voin-1", "variant": "small" | "paper",
               "num_classes": int, "canvas_size": int, "trained": bool, ...}}

Without a weights file, :meth:`Inpainter.from_weights` uses :data:`DEFAULT_WEIGHTS` when it
exists; otherwise it returns the *non-learned fallback* (``learned == False``): DIS flow of
the input frames with the hole flow filled from the object's visible flow
(:func:`~instseg.models.inpainting.flow.fill_clip_flows`), flow-guided propagation inside the
amodal mask, OpenCV Telea for the pixels propagation cannot reach. Random weights are never
used. The fallback has no shape network:
the amodal region comes from ``holes`` or, given only occluder masks, from the convex hull of
the visible mask clipped to the occluder (a documented heuristic).

Memory: :meth:`Inpainter.run` holds at most one window of frames and masks (plus the decoder's
look-ahead), writes each frame as soon as its owning window is done and encodes the MP4 from
the written PNGs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from instseg.engine.weights import (
    VOIN_FORMAT,
    WeightsMeta,
    read_weights_file,
    save_weights_file,
    shipped_weights,
)
from instseg.models.inpainting.flow import Preset
from instseg.models.inpainting.voin import (
    VOIN,
    VOIN_VARIANTS,
    VOINNets,
    VOINResult,
    temporal_windows,
)
from instseg.utils.image import read_image
from instseg.utils.io import atomic_write_json
from instseg.utils.progress import progress
from instseg.utils.sources import is_video, iter_source, list_images, video_fps
from instseg.utils.video_writer import write_video

__all__ = [
    "DEFAULT_WEIGHTS",
    "WEIGHTS_FORMAT",
    "Inpainter",
    "InpaintSummary",
    "save_voin_weights",
    "load_voin_weights",
    "list_frames",
    "read_mask",
    "hull_amodal",
]

DEFAULT_WEIGHTS = shipped_weights("voin")
WEIGHTS_FORMAT = VOIN_FORMAT
_NET_NAMES = ("shape_net", "flow_net", "generator")


# ------------------------------------------------------------------------------ weights files
def save_voin_weights(
    nets: VOINNets,
    path: str | Path,
    *,
    variant: str,
    num_classes: int,
    canvas_size: int,
    trained: bool,
    half: bool = True,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the three networks as one weights file (fp16 by default; floating tensors are cast
    back to fp32 on load); ``meta`` (plain values: iterations, seed, data ...) becomes the
    file's ``training`` provenance."""
    if variant not in VOIN_VARIANTS:
        raise ValueError(f"unknown VOIN variant {variant!r}; choose from {sorted(VOIN_VARIANTS)}")
    full = WeightsMeta(
        task="voin",
        model={"variant": variant, "canvas_size": int(canvas_size), "format": WEIGHTS_FORMAT},
        num_classes=int(num_classes),
        trained=bool(trained),
        training=dict(meta or {}),
    )
    return save_weights_file(_as_module(nets), path, full, half=half)


def load_voin_weights(path: str | Path) -> tuple[VOINNets, WeightsMeta]:
    """Rebuild the variant named in the file's meta and load its weights (fp32, eval mode).
    Raises ValueError naming ``path`` for a file of another task / format / variant or with
    missing, unexpected or mis-shaped tensors."""
    state, meta = read_weights_file(path)
    if meta.task != "voin" or meta.model.get("format") != WEIGHTS_FORMAT:
        raise ValueError(
            f"{path}: not a VOIN weights file (meta task={meta.task!r}, "
            f"format={meta.model.get('format')!r}; expected 'voin' / {WEIGHTS_FORMAT!r})"
        )
    variant = meta.model.get("variant")
    if variant not in VOIN_VARIANTS:
        raise ValueError(f"{path}: unknown VOIN variant {variant!r} in meta")
    nets = VOIN_VARIANTS[variant](num_classes=meta.num_classes)
    module = _as_module(nets)
    ref = module.state_dict()
    bad = sorted(k for k in set(ref) & set(state) if ref[k].shape != state[k].shape)
    missing, unexpected = sorted(set(ref) - set(state)), sorted(set(state) - set(ref))
    if bad or missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match VOIN variant {variant!r}: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}, shape mismatches {bad[:4]}"
        )
    module.load_state_dict({k: v.to(ref[k].dtype) for k, v in state.items()})
    module.eval()
    return nets, meta


# ---------------------------------------------------------------------------------- Inpainter
@dataclass
class InpaintSummary:
    """What :meth:`Inpainter.run` did: ``num_frames``; pixel counts of the filled region
    (``hole_pixels``) and of how it was filled (``propagated`` / ``generated`` / ``telea``);
    ``outputs``: the written ``frames`` / ``amodal`` folders and ``video`` file."""

    num_frames: int = 0
    hole_pixels: int = 0
    propagated: int = 0
    generated: int = 0
    telea: int = 0
    outputs: dict[str, Path] = field(default_factory=dict)


class Inpainter:
    """VOIN inference with its settings; the networks are stateless, state lives here.

    Args:
        nets: trained networks, or None for the non-learned fallback (module docstring).
        meta: the weights file's :class:`WeightsMeta` (``model['canvas_size']`` is read).
        source: human-readable origin of the model (a path or "fallback").
        use_flow / use_generator: the switches of Table 5.8 (the fallback never generates).
        window / overlap: temporal window and overlap in frames (``0 <= overlap < window``).
        label: class id for a class-aware shape network (default 0).
        flow_preset: DIS preset. device: where networks run. progress: tqdm bars.
    """

    def __init__(
        self,
        *,
        nets: VOINNets | None,
        meta: WeightsMeta | None = None,
        source: str = "fallback",
        use_flow: bool = True,
        use_generator: bool = True,
        window: int = 12,
        overlap: int = 4,
        label: int = 0,
        flow_preset: Preset = "medium",
        device: str | torch.device = "cpu",
        progress: bool = True,
    ) -> None:
        self.meta = meta or WeightsMeta(task="voin", trained=False)
        self.source = source
        self.learned = nets is not None
        self.window, self.overlap = window, overlap
        self.label = label
        self.progress = progress
        self.voin = VOIN(
            shape_net=nets.shape_net if nets else None,
            flow_net=nets.flow_net if nets else None,
            generator=nets.generator if nets else None,
            use_flow=use_flow,
            use_generator=use_generator and self.learned,
            window=window,
            overlap=overlap,
            canvas_size=int(self.meta.model.get("canvas_size", 64)),
            flow_preset=flow_preset,
            device=device,
            progress=False,
        )

    @classmethod
    def from_weights(cls, weights: str | Path | None = None, **kw: Any) -> Inpainter:
        """From ``weights``; None: :data:`DEFAULT_WEIGHTS` if present, else the fallback
        (check ``learned``; the CLI prints a warning)."""
        path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
        if weights is None and not path.is_file():
            return cls(nets=None, source="fallback", **kw)
        nets, meta = load_voin_weights(path)
        return cls(nets=nets, meta=meta, source=str(path), **kw)

    def describe(self) -> str:
        if not self.learned:
            return "non-learned fallback: DIS flow propagation + OpenCV Telea (no generator)"
        v = self.voin
        parts = [
            f"VOIN '{self.meta.model.get('variant')}' from {self.source}",
            "trained" if self.meta.trained else "NOT TRAINED (meta trained=False)",
            f"flow {'on' if v.use_flow else 'off'}",
            f"generator {'on' if v.use_generator else 'off (Telea)'}",
        ]
        return ", ".join(parts)

    def inpaint(
        self,
        frames: np.ndarray,
        visible: np.ndarray,
        *,
        holes: np.ndarray | None = None,
        occluder: np.ndarray | None = None,
    ) -> VOINResult:
        """One window (or a whole short clip) in memory.

        Args:
            frames: (T, H, W, 3) uint8 RGB. visible: (T, H, W) bool visible object masks.
            holes: (T, H, W) bool region to fill (taken out of ``visible``); None: amodal
                shape completion (or, in the fallback, the hull heuristic on ``occluder``).
            occluder: (T, H, W) bool; the filled region is clipped to it when given.
        """
        visible = np.asarray(visible, bool)
        if holes is not None:
            visible = visible & ~np.asarray(holes, bool)
        amodal = self.amodal(visible, holes=holes, occluder=occluder)
        return self.voin(frames, visible, amodal=amodal)

    def amodal(
        self,
        visible: np.ndarray,
        *,
        holes: np.ndarray | None = None,
        occluder: np.ndarray | None = None,
    ) -> np.ndarray:
        """(T, H, W) bool amodal masks: ``visible | holes`` when holes are given, else shape
        completion (learned) or :func:`hull_amodal` (fallback), clipped to ``occluder``."""
        if holes is not None:
            return np.asarray(visible, bool) | np.asarray(holes, bool)
        if self.learned:
            am = self.voin.complete_shape(visible, self.label if self._class_aware() else None)
        elif occluder is not None:
            am = hull_amodal(visible, occluder)
        else:
            raise ValueError(
                "no learned VOIN model is installed, so the region to fill cannot be predicted: "
                "pass --holes (or --occluder-masks for the convex-hull heuristic), or --weights"
            )
        if occluder is not None:
            am = visible | (am & np.asarray(occluder, bool))
        return am

    def run(
        self,
        source: str | Path,
        visible_dir: str | Path,
        out_dir: str | Path,
        *,
        holes_dir: str | Path | None = None,
        occluder_dir: str | Path | None = None,
        fps: float | None = None,
    ) -> InpaintSummary:
        """Inpaint a frame folder / video file with per-frame PNG masks matched by stem; writes
        ``out/frames/<stem>.png``, ``out/amodal/<stem>.png``, ``out/video.mp4`` and
        ``out/inpaint.json`` (the source, the mask folders and the frame names)."""
        names = list_frames(source)
        mask_dirs = {"visible": visible_dir, "holes": holes_dir, "occluder": occluder_dir}
        mask_paths = {k: _mask_paths(Path(d), names, k) for k, d in mask_dirs.items() if d}
        out = Path(out_dir)
        (out / "frames").mkdir(parents=True, exist_ok=True)
        (out / "amodal").mkdir(parents=True, exist_ok=True)
        reader = _WindowReader(source)
        summary = InpaintSummary(num_frames=len(names))
        wins = temporal_windows(len(names), self.window, self.overlap)
        bar = progress(total=len(names), desc="inpaint", unit="frame", disable=not self.progress)
        for s, e, k0, k1 in wins:
            frames = reader.frames(s, e)
            masks = {
                k: np.stack([read_mask(p[i], frames.shape[1:3]) for i in range(s, e)])
                for k, p in mask_paths.items()
            }
            res = self.inpaint(
                frames, masks["visible"], holes=masks.get("holes"), occluder=masks.get("occluder")
            )
            for i in range(k0, k1):
                j = i - s
                Image.fromarray(res.frames[j]).save(out / "frames" / f"{names[i]}.png")
                Image.fromarray(res.amodal[j].astype(np.uint8) * 255).save(
                    out / "amodal" / f"{names[i]}.png"
                )
            kept = slice(k0 - s, k1 - s)
            summary.hole_pixels += int(res.holes[kept].sum())
            summary.propagated += int(res.propagated[kept].sum())
            summary.generated += int(res.generated[kept].sum())
            summary.telea += int(res.fallback[kept].sum())
            reader.release(e if (s, e, k0, k1) == wins[-1] else _next_start(wins, s))
            bar.update(k1 - k0)
        bar.close()
        if fps is None:
            fps = video_fps(source) if is_video(source) else 24.0
        video = write_video(
            out / "video.mp4", (read_image(out / "frames" / f"{n}.png") for n in names), fps=fps
        )
        summary.outputs = {"frames": out / "frames", "amodal": out / "amodal", "video": video}
        atomic_write_json(  # what the outputs were made from (read by `instseg report`)
            out / "inpaint.json",
            {"source": str(Path(source).resolve()), "frames": names}
            | {f"{k}_masks": str(Path(d).resolve()) if d else None for k, d in mask_dirs.items()},
            indent=2,
        )
        summary.outputs["manifest"] = out / "inpaint.json"
        return summary

    # ------------------------------------------------------------------------------ helpers
    def _class_aware(self) -> bool:
        return self.voin.shape_net is not None and self.voin.shape_net.num_classes > 0


def hull_amodal(visible: np.ndarray, occluder: np.ndarray) -> np.ndarray:
    """Non-learned amodal guess: per frame, ``visible | (convex_hull(visible) & occluder)``;
    (T, H, W) bool x2 -> (T, H, W) bool."""
    out = np.asarray(visible, bool).copy()
    occluder = np.asarray(occluder, bool)
    for t, v in enumerate(visible):
        ys, xs = np.nonzero(v)
        if len(xs) < 3:
            continue
        hull = cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32))
        poly = np.zeros(v.shape, np.uint8)
        cv2.fillConvexPoly(poly, hull, 1)
        out[t] |= poly.astype(bool) & occluder[t]
    return out


def list_frames(source: str | Path) -> list[str]:
    """Frame names of a folder / glob / image (file stems, must be unique) or a video file
    (``%06d`` frame indices, as :func:`instseg.utils.sources.iter_source` names them)."""
    if is_video(source):
        import av

        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: video file not found")
        with av.open(str(path)) as c:
            n = sum(1 for _ in c.decode(video=0))
        if n == 0:
            raise ValueError(f"{path}: the video has no frames")
        return [f"{i:06d}" for i in range(n)]
    files = list_images(source)
    stems = [f.stem for f in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise ValueError(
            f"{source}: several frames share a name (stem) {dup[:3]}; "
            "masks are matched by stem, so frame names must be unique"
        )
    return stems


def read_mask(path: Path, hw: tuple[int, int]) -> np.ndarray:
    """PNG mask -> (H, W) bool (nonzero = inside); size must be ``hw``."""
    try:
        with Image.open(path) as im:
            m = np.asarray(im.convert("L")) > 0
    except OSError as e:
        raise OSError(f"{path}: cannot read mask ({e})") from e
    if m.shape != tuple(hw):
        raise ValueError(f"{path}: mask size {m.shape} does not match frame size {tuple(hw)}")
    return m


def _mask_paths(folder: Path, names: list[str], kind: str) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {kind} mask folder not found")
    paths = [folder / f"{n}.png" for n in names]
    for n, p in zip(names, paths, strict=True):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: {kind} mask missing for frame '{n}'")
    return paths


def _next_start(wins: list[tuple[int, int, int, int]], s: int) -> int:
    starts = [w[0] for w in wins]
    return starts[starts.index(s) + 1]


class _WindowReader:
    """Sequential frame access with a cache of the frames a later window still needs."""

    def __init__(self, source: str | Path) -> None:
        self._it = iter_source(source)
        self._cache: dict[int, np.ndarray] = {}
        self._next = 0

    def frames(self, start: int, end: int) -> np.ndarray:
        while self._next < end:
            _, frame, _ = next(self._it)
            self._cache[self._next] = frame
            self._next += 1
        shapes = {self._cache[i].shape for i in range(start, end)}
        if len(shapes) > 1:
            raise ValueError(f"frames {start}..{end - 1} have different sizes {sorted(shapes)}")
        return np.stack([self._cache[i] for i in range(start, end)])

    def release(self, before: int) -> None:
        for i in [i for i in self._cache if i < before]:
            del self._cache[i]


def _as_module(nets: VOINNets) -> nn.ModuleDict:
    return nn.ModuleDict({n: getattr(nets, n) for n in _NET_NAMES})
