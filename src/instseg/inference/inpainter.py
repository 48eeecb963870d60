"""VOIN inference (paper Sect. 5.4, Figs. 5.6-5.7): :class:`Inpainter`, the one pipeline object.

Over a clip (:meth:`Inpainter.inpaint` in memory, :meth:`Inpainter.run` streamed from and to
disk; both go through ``Inpainter._process``):

1. (a) amodal masks: ``visible | holes`` when the region to fill is given, else the learned
   shape completion (:meth:`Inpainter.complete_shape`: object canvas crop, the shape network,
   paste back, ``logit > 0``, united with the visible mask) or, without a model, the convex-hull
   heuristic on the occluder (:func:`~instseg.models.inpainting.baselines.hull_amodal`);
   clipped to the occluder when given. Predicted masks come from a first pass over the
   windows (each frame's from the window where it is most central). ``holes = amodal &
   ~visible`` is what gets filled.
2. (b) ``use_flow`` (the "Use flow?" column of Table 5.8): DIS flows of the input frames; inside
   the holes they show the occluder's motion, so with ``fill_flow`` they are first replaced by
   the object's own visible flow (normalised convolution), then refined inside the amodal mask
   by the flow completion network when there is one and ``use_flow_net``
   (:meth:`Inpainter.complete_flows`, one consecutive pair at a time, each pair once, stored in
   ``flow_dtype``); then flow-guided pixel propagation inside the amodal mask with the
   forward-backward cycle check
   (:func:`~instseg.models.inpainting.flow_guided_propagation.propagate_pixels`) over the
   **whole clip**, or ``propagation_range`` frames each way: the propagation range is
   independent of the generator's window (ProPainter's design; propagating inside 12-frame
   windows cost ~3.8 dB hole PSNR on the model card's split).
3. (c) the pixels still missing go to the occlusion-aware generator (``use_generator``), run in
   overlapping windows of ``window`` frames (``overlap`` shared, :func:`temporal_windows`, each
   output frame taken from the window in which it is most central) on the object's box (union
   over the window, plus ``generator_margin``), scaled to at most the frame height the
   generator was trained at (``model.stage_sizes`` of the weights file); without a generator
   they are filled per frame with OpenCV Telea and flagged in ``InpaintResult.fallback``.
   Occlusion-aware (``leftover_context="object"``, the default): Telea draws only on the
   object's own known pixels (visible + propagated), never on the pixels around the hole that
   are not the object, which are mostly the occluder: 24.08 vs 22.05 dB hole PSNR on the model
   card's DAVIS split, 32.7 vs 22.0 on its synthetic clips (``"frame"``: plain Telea).
   A *leftover* generator (``model.generator_mode == "leftover"``, issue 16) is residual: the
   leftovers are first filled with Telea on the propagated frames, and the generator, fed those
   frames + the leftover and occlusion masks at exactly its trained crop scale (longer side
   ``stage_sizes['generator']``), adds a correction inside the leftovers (zero when untrained).

Which learned stages run by default is the weights file's to say: ``use_flow_net`` /
``use_generator`` left at None take the file's recommended switches (``model.defaults``,
:func:`recommended_stages`: the configuration measured best with that file on its model card's
split), and every stage the file has when it recommends none. The shipped ``voin_default.pt``
recommends both off: its flow residual costs 0.4 dB and its leftover generator ties with the
object-context Telea it corrects (24.08 dB hole PSNR with both off, 24.10 with the generator,
23.71 with both, on the model card's DAVIS split), so by default it runs shape completion (when
the region to fill is not given), propagation on the non-learned completed flow and the
object-context Telea; ``use_flow_net=True`` / ``use_generator=True`` (``instseg inpaint
--flow-net --generator``) run its learned stages.

The learned stages are tensor functions of :class:`~instseg.models.inpainting.voin.VOINModel`;
this module owns the settings (:class:`InpaintOptions`), the weights file, numpy / disk IO,
progress and the split over time. Memory: the frames, masks and completed flows of
``window + 2 * propagation_range`` frames (the whole clip without a range), the predicted
amodal masks of the clip bit-packed; :meth:`Inpainter.run` writes each frame as soon as its
window is done and encodes the MP4 from the written PNGs. Before :meth:`Inpainter.run`
inpaints, one pass checks that every frame and mask can be read
(:func:`~instseg.inference.inpaint_io.check_frames`): an unreadable frame is dropped from the
clip with a warning and listed in ``inpaint.json`` (``strict``: the first one is an error).

Weights file (one file for the three networks, :mod:`instseg.engine.weights` format, task
``voin``, written by :func:`save_voin_weights`)::

    {"model": VOINModel state_dict (shape_net.*, flow_net.*, generator.*)  (fp16),
     "meta":  {"task": "voin", "model": {"format": "instseg-voin-1", "variant": "small" |
               "paper", "canvas_size": int, "stage_sizes": {"shape" | "flow" | "generator":
               frame height trained at; a leftover generator: its crops' longer side}
               (optional), "defaults": {"use_flow_net" | "use_generator": bool} (optional,
               the recommended stage switches), "generator_mode": "hole" | "leftover"
               (optional, "hole" when absent)},
               "num_classes": int, "trained": bool, ...}}

Without a weights file, :meth:`Inpainter.from_weights` uses :data:`DEFAULT_WEIGHTS` when it
exists; otherwise it returns the *non-learned fallback* (``learned == False``): DIS flow with
the hole flow filled from the object's visible flow, flow-guided propagation inside the amodal
mask, OpenCV Telea for the pixels propagation cannot reach. Random weights are never used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from instseg.engine.weights import (
    VOIN_FORMAT,
    WeightsMeta,
    read_weights_file,
    save_weights_file,
    shipped_weights,
)
from instseg.inference.inpaint_io import WindowReader, check_frames, mask_paths, read_mask
from instseg.models.inpainting.baselines import hull_amodal, inpaint_opencv
from instseg.models.inpainting.flow import Preset, clip_flows, fill_clip_flows
from instseg.models.inpainting.flow_guided_propagation import propagate_pixels
from instseg.models.inpainting.generator import GENERATOR_MODES
from instseg.models.inpainting.shape_completion import object_canvas, paste_canvas
from instseg.models.inpainting.voin import VOIN_VARIANTS, VOINModel, VOINNets
from instseg.utils.errors import InvalidInputError
from instseg.utils.image import read_image
from instseg.utils.io import atomic_write_json
from instseg.utils.progress import progress
from instseg.utils.sources import is_video, video_fps
from instseg.utils.video_writer import write_video

__all__ = [
    "DEFAULT_WEIGHTS",
    "WEIGHTS_FORMAT",
    "InpaintOptions",
    "LEFTOVER_CONTEXTS",
    "LeftoverContext",
    "InpaintResult",
    "InpaintSummary",
    "Inpainter",
    "STAGE_SWITCHES",
    "recommended_stages",
    "temporal_windows",
    "generator_mode",
    "trained_generator_size",
    "save_voin_weights",
    "load_voin_weights",
]

DEFAULT_WEIGHTS = shipped_weights("voin")
WEIGHTS_FORMAT = VOIN_FORMAT
RESULT_MASKS = ("amodal", "holes", "propagated", "generated", "fallback")
FlowDtype = Literal["float16", "float32"]
LeftoverContext = Literal["object", "frame"]
LEFTOVER_CONTEXTS: tuple[str, ...] = ("object", "frame")
DEFAULT_GENERATOR_MAX_SIDE = 256  # weights files without model.stage_sizes
# the InpaintOptions switches a weights file may recommend (model.defaults); None in the options
STAGE_SWITCHES = ("use_flow_net", "use_generator")


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
    stage_sizes: dict[str, int] | None = None,
    defaults: dict[str, bool] | None = None,
) -> Path:
    """Write the three networks as one weights file (fp16 by default; floating tensors are cast
    back to fp32 on load); ``meta`` (plain values: iterations, seed, data ...) becomes the
    file's ``training`` provenance; ``stage_sizes`` (``{"shape" | "flow" | "generator":
    frame height in pixels}``, what each stage was trained at) goes to ``model.stage_sizes``,
    where inference reads the generator's input scale (:class:`InpaintOptions`); ``defaults``
    (``{"use_flow_net" | "use_generator": bool}``, the stage switches measured best with these
    weights) goes to ``model.defaults``, what inference runs when the options leave a switch at
    None (:func:`recommended_stages`). A ``"leftover"`` generator (``nets.generator.mode``) is
    recorded as ``model.generator_mode`` (inference then runs it residually on Telea)."""
    if variant not in VOIN_VARIANTS:
        raise ValueError(f"unknown VOIN variant {variant!r}; choose from {sorted(VOIN_VARIANTS)}")
    model: dict[str, Any] = {
        "variant": variant,
        "canvas_size": int(canvas_size),
        "format": WEIGHTS_FORMAT,
    }
    if stage_sizes:
        bad = sorted(set(stage_sizes) - {"shape", "flow", "generator"})
        if bad or any(int(v) < 4 for v in stage_sizes.values()):
            raise ValueError(f"stage_sizes: unknown stages {bad} or a size < 4: {stage_sizes}")
        model["stage_sizes"] = {k: int(v) for k, v in stage_sizes.items()}
    if defaults:
        model["defaults"] = _check_defaults(defaults, "defaults")
    if nets.generator.mode != "hole":
        model["generator_mode"] = nets.generator.mode
    full = WeightsMeta(
        task="voin",
        model=model,
        num_classes=int(num_classes),
        trained=bool(trained),
        training=dict(meta or {}),
    )
    return save_weights_file(VOINModel.from_nets(nets), path, full, half=half)


def trained_generator_size(meta: WeightsMeta) -> int:
    """The frame height (pixels) the file's generator was trained at
    (``model.stage_sizes['generator']``; in a file of the flat meta layout, such as the shipped
    ``voin_default.pt``, a top-level ``stage_sizes``, read into ``training``), or
    :data:`DEFAULT_GENERATOR_MAX_SIDE` for a file that does not record it: the longest side
    :meth:`Inpainter.generate` feeds the generator (a leftover generator: exactly that side,
    the longer side of the crops it was trained on)."""
    sizes = meta.model.get("stage_sizes") or meta.training.get("stage_sizes") or {}
    size = sizes.get("generator")
    return int(size) if size else DEFAULT_GENERATOR_MAX_SIDE


def generator_mode(meta: WeightsMeta) -> str:
    """The file's generator mode: ``model.generator_mode`` (flat layout: ``training``),
    ``"hole"`` when absent (every file before issue 16); ValueError for an unknown one."""
    mode = meta.model.get("generator_mode") or meta.training.get("generator_mode") or "hole"
    if mode not in GENERATOR_MODES:
        raise ValueError(f"unknown generator_mode {mode!r} in meta; expected {GENERATOR_MODES}")
    return str(mode)


def recommended_stages(meta: WeightsMeta) -> dict[str, bool]:
    """The stage switches the weights file recommends: ``model.defaults`` (in a file of the flat
    meta layout, such as the shipped ``voin_default.pt``, a top-level ``defaults``, read into
    ``training``), ``{"use_flow_net" | "use_generator": bool}``, the configuration measured best
    with the file (its model card). ``{}`` for a file without: every stage it has runs. Raises
    ValueError for a switch not in :data:`STAGE_SWITCHES` or a value that is not a bool."""
    d = meta.model.get("defaults") or meta.training.get("defaults") or {}
    return _check_defaults(d, "meta defaults")


def _check_defaults(d: Any, where: str) -> dict[str, bool]:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a dict of stage switches, got {d!r}")
    bad = sorted(set(d) - set(STAGE_SWITCHES))
    if bad or not all(isinstance(v, bool) for v in d.values()):
        raise ValueError(
            f"{where}: stage switches must be {list(STAGE_SWITCHES)} with bool values, got {d!r}"
        )
    return dict(d)


def load_voin_weights(path: str | Path) -> tuple[VOINNets, WeightsMeta]:
    """Rebuild the variant named in the file's meta and load its weights (fp32, eval mode).
    Raises ValueError naming ``path`` for a file of another task / format / variant or with
    missing, unexpected or mis-shaped tensors."""
    state, meta = read_weights_file(path, task="voin")
    if meta.model.get("format") != WEIGHTS_FORMAT:
        raise ValueError(
            f"{path}: not a VOIN weights file (format {meta.model.get('format')!r}, "
            f"expected {WEIGHTS_FORMAT!r})"
        )
    variant = meta.model.get("variant")
    if variant not in VOIN_VARIANTS:
        raise ValueError(f"{path}: unknown VOIN variant {variant!r} in meta")
    try:
        recommended_stages(meta)
        mode = generator_mode(meta)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    nets = VOIN_VARIANTS[variant](num_classes=meta.num_classes, generator_mode=mode)
    module = VOINModel.from_nets(nets)
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


# ---------------------------------------------------------------------------------- settings
@dataclass(frozen=True, kw_only=True)
class InpaintOptions:
    """Every VOIN inference setting.

    - ``use_flow``: flow completion + propagation (False: everything goes to the generator).
    - ``use_flow_net``: refine the filled flow with the learned flow completion network when
      the weights have one (False: the non-learned completion only, ``--no-flow-net``).
    - ``use_generator``: the generator fills what propagation leaves (False: Telea; the
      fallback model never generates).
    - ``use_flow_net`` / ``use_generator`` None (the default): what the weights file recommends
      (:func:`recommended_stages`; the shipped ``voin_default.pt``: both off, the best measured
      configuration on its model card), on when it recommends nothing. The
      :class:`Inpainter` holds the options with both resolved to bools.
    - ``fill_flow``: replace the hole flow by the object's visible flow before the flow network
      (False: the network sees the raw DIS flow, as in the paper's description).
    - ``propagation_range``: how far (frames, each way) flow-guided propagation looks for a
      known pixel; None: the whole clip. Independent of the generator's window: the frames,
      masks and completed flows of ``window + 2 * propagation_range`` frames are held, so a
      finite range bounds memory on long videos.
    - ``flow_dtype``: storage of the completed flows between flow completion and propagation
      (``float16`` halves the largest buffer; propagation computes in float32).
    - ``window`` / ``overlap``: the generator's temporal window and overlap in frames
      (``0 <= overlap < window``); also the shape completion's window.
    - ``canvas_size`` / ``canvas_context``: the shape-completion crop (see
      :func:`~instseg.models.inpainting.shape_completion.object_canvas`); ``canvas_size`` None:
      the weights file's ``model.canvas_size`` (64 without one).
    - ``flow_preset`` / ``cycle_threshold``: DIS preset and the propagation's forward-backward
      cycle threshold (pixels).
    - ``generator_margin`` / ``generator_max_side``: generator crop margin and size limit
      (pixels); ``generator_max_side`` None: the frame height the generator was trained at
      (the weights file's ``model.stage_sizes['generator']``), 256 for a file without it.
    - ``leftover_context``: what the Telea fill of the leftovers (also the input of a leftover
      generator) draws on. ``"object"`` (occlusion-aware, the default): only the object's own
      known pixels (visible + propagated, ``amodal & ~left``), never the pixels around the hole
      that are not the object, which are mostly the occluder (+2.0 dB hole PSNR on the model
      card's split). ``"frame"``: every known pixel (plain Telea, the "propagation + Telea" row
      of Table 5.8).
    """

    use_flow: bool = True
    use_flow_net: bool | None = None
    use_generator: bool | None = None
    fill_flow: bool = True
    propagation_range: int | None = None
    flow_dtype: FlowDtype = "float16"
    window: int = 12
    overlap: int = 4
    canvas_size: int | None = None
    canvas_context: float = 2.0
    flow_preset: Preset = "medium"
    cycle_threshold: float = 5.0
    generator_margin: int = 16
    generator_max_side: int | None = None
    leftover_context: LeftoverContext = "object"

    def __post_init__(self) -> None:
        if self.leftover_context not in LEFTOVER_CONTEXTS:
            raise ValueError(
                f"leftover_context must be one of {LEFTOVER_CONTEXTS}, "
                f"got {self.leftover_context!r}"
            )
        if not 0 <= self.overlap < self.window:
            raise ValueError(
                f"need 0 <= overlap < window, got overlap={self.overlap}, window={self.window}"
            )
        if self.canvas_size is not None and self.canvas_size < 8:
            raise ValueError(f"canvas_size must be >= 8, got {self.canvas_size}")
        if self.propagation_range is not None and self.propagation_range < 1:
            raise ValueError(
                f"propagation_range must be >= 1 (None: whole clip), got {self.propagation_range}"
            )
        if self.flow_dtype not in ("float16", "float32"):
            raise ValueError(f"flow_dtype must be float16 or float32, got {self.flow_dtype!r}")
        if self.generator_max_side is not None and self.generator_max_side < 4:
            raise ValueError(f"generator_max_side must be >= 4, got {self.generator_max_side}")


@dataclass
class InpaintResult:
    """``frames`` (T, H, W, 3) uint8, the completed video; masks (T, H, W) bool: ``amodal``
    (used / predicted), ``holes`` (= amodal & ~visible), ``propagated`` (filled by flow-guided
    propagation), ``generated`` (filled by the generator), ``fallback`` (filled by Telea)."""

    frames: np.ndarray
    amodal: np.ndarray
    holes: np.ndarray
    propagated: np.ndarray
    generated: np.ndarray
    fallback: np.ndarray


@dataclass
class InpaintSummary:
    """What :meth:`Inpainter.run` did: ``num_frames`` inpainted; ``skipped``: the unreadable
    frames left out (file names, or ``%06d`` indices of a video) and ``skip_note``, one line
    counting them (empty when none); pixel counts of the filled region (``hole_pixels``) and of
    how it was filled (``propagated`` / ``generated`` / ``telea``); ``outputs``: the written
    ``frames`` / ``amodal`` folders, ``video`` file and ``manifest``."""

    num_frames: int = 0
    skipped: list[str] = field(default_factory=list)
    skip_note: str = ""
    hole_pixels: int = 0
    propagated: int = 0
    generated: int = 0
    telea: int = 0
    outputs: dict[str, Path] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- Inpainter
WindowMasks = dict[str, np.ndarray]  # "visible" and optionally "holes" / "occluder" / "amodal"


class Inpainter:
    """VOIN inference: the networks, the settings and the windowing over time (module docstring).

    Args:
        model: the learned stages (any network may be None), or None for the non-learned
            fallback.
        options: the inference settings; stage switches left at None are resolved from
            ``meta`` (:func:`recommended_stages`, on without a recommendation) and
            ``self.options`` holds the resolved ones.
        meta: the weights file's :class:`WeightsMeta` (``model['canvas_size']``,
            ``stage_sizes`` and ``defaults`` are read).
        source: human-readable origin of the model (a path or "fallback").
        device: where the networks run. progress: show a tqdm bar over frames.
    """

    def __init__(
        self,
        *,
        model: VOINModel | None,
        options: InpaintOptions | None = None,
        meta: WeightsMeta | None = None,
        source: str = "fallback",
        device: str | torch.device = "cpu",
        progress: bool = True,
    ) -> None:
        options = options or InpaintOptions()
        self.meta = meta or WeightsMeta(task="voin", trained=False)
        recommended = recommended_stages(self.meta)
        unset = [k for k in STAGE_SWITCHES if getattr(options, k) is None]
        # the switches set by the file's recommendation (describe() says so)
        self.file_defaults = {k: recommended[k] for k in unset if k in recommended}
        self.options = replace(options, **{k: recommended.get(k, True) for k in unset})
        self.source = source
        self.learned = model is not None
        self.model = (model if model is not None else VOINModel()).eval().to(torch.device(device))
        self.canvas_size = self.options.canvas_size or int(self.meta.model.get("canvas_size", 64))
        self.generator_max_side = self.options.generator_max_side or trained_generator_size(
            self.meta
        )
        self.progress = progress

    @classmethod
    def from_weights(
        cls,
        weights: str | Path | None = None,
        *,
        options: InpaintOptions | None = None,
        device: str | torch.device = "cpu",
        progress: bool = True,
    ) -> Inpainter:
        """From ``weights``; None: :data:`DEFAULT_WEIGHTS` if present, else the fallback
        (check ``learned``; the CLI prints a warning)."""
        kw: dict[str, Any] = {"options": options, "device": device, "progress": progress}
        path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
        if weights is None and not path.is_file():
            return cls(model=None, source="fallback", **kw)
        nets, meta = load_voin_weights(path)
        return cls(model=VOINModel.from_nets(nets), meta=meta, source=str(path), **kw)

    @property
    def generates(self) -> bool:
        """Whether leftovers go to the generator (else Telea)."""
        return self.options.use_generator and self.model.generator is not None

    def describe(self) -> str:
        o = self.options
        telea = "Telea from the object's pixels" if o.leftover_context == "object" else "Telea"
        if not self.learned:
            return f"non-learned fallback: DIS flow propagation + OpenCV {telea} (no generator)"
        reach = "whole clip" if o.propagation_range is None else f"+-{o.propagation_range} frames"
        parts = [
            f"VOIN '{self.meta.model.get('variant')}' from {self.source}",
            "trained" if self.meta.trained else "NOT TRAINED (meta trained=False)",
            f"flow {'on' if o.use_flow else 'off'}"
            + (f" (flow net {'on' if self.refines_flow else 'off'}, propagation {reach})"
               if o.use_flow else ""),
            f"generator {'on' if self.generates else f'off ({telea})'}"
            + (f" ({self._generator_note()})" if self.generates else ""),
        ]  # fmt: skip
        if self.file_defaults:  # switches the options left to the file's recommendation
            names = {"use_flow_net": "flow net", "use_generator": "generator"}
            chosen = " and ".join(names[k] for k in self.file_defaults)
            parts.append(f"{chosen} as the weights file recommends")
        return ", ".join(parts)

    def _generator_note(self) -> str:
        if self.model.generator is not None and self.model.generator.residual:
            return (
                f"leftover generator: residual on Telea from the "
                f"{self.options.leftover_context}'s pixels, crops at {self.generator_max_side} px"
            )
        return f"crops <= {self.generator_max_side} px"

    @property
    def refines_flow(self) -> bool:
        """Whether the learned flow completion network refines the filled flow."""
        return self.options.use_flow_net and self.model.flow_net is not None

    # ------------------------------------------------------------------------ whole videos
    def inpaint(
        self,
        frames: np.ndarray,
        visible: np.ndarray,
        *,
        holes: np.ndarray | None = None,
        occluder: np.ndarray | None = None,
        amodal: np.ndarray | None = None,
        label: int | None = 0,
    ) -> InpaintResult:
        """Inpaint the occluded part of one object in a clip held in memory (module docstring:
        propagation over ``propagation_range``, the generator in windows).

        Args:
            frames: (T, H, W, 3) uint8 RGB. visible: (T, H, W) bool visible object masks.
            holes: (T, H, W) bool region to fill (taken out of ``visible``).
            amodal: (T, H, W) bool amodal masks (the region to fill is ``amodal & ~visible``);
                without ``holes`` and ``amodal``: shape completion (or, in the fallback, the
                hull heuristic on ``occluder``).
            occluder: (T, H, W) bool; a predicted region to fill is clipped to it.
            label: object class id for a class-aware shape network.
        """
        frames, visible = np.asarray(frames), np.asarray(visible, bool)
        masks = {"visible": visible, "holes": holes, "occluder": occluder, "amodal": amodal}
        masks = {k: np.asarray(v, bool) for k, v in masks.items() if v is not None}
        _check_inputs(frames, masks)
        res = InpaintResult(frames.copy(), *(np.zeros_like(visible) for _ in RESULT_MASKS))
        for k0, k1, out in self._process(
            len(frames),
            lambda s, e: frames[s:e],
            lambda s, e: {k: v[s:e] for k, v in masks.items()},
            label,
        ):
            for name in ("frames", *RESULT_MASKS):
                getattr(res, name)[k0:k1] = getattr(out, name)
        return res

    def run(
        self,
        source: str | Path,
        visible_dir: str | Path,
        out_dir: str | Path,
        *,
        holes_dir: str | Path | None = None,
        occluder_dir: str | Path | None = None,
        fps: float | None = None,
        label: int | None = 0,
        strict: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> InpaintSummary:
        """Inpaint a frame folder / video file with per-frame PNG masks matched by stem; writes
        ``out/frames/<stem>.png``, ``out/amodal/<stem>.png``, ``out/video.mp4`` and
        ``out/inpaint.json`` (the source, the mask folders, the frame names and the
        ``skipped`` ones).

        First one pass checks every frame and its masks: an unreadable frame (or mask) is left
        out of the clip with one ``warn(message)`` (default: a log warning) and produces no
        output; ``strict``: the first one raises
        :class:`~instseg.utils.errors.UnreadableFileError` before anything is written. No
        readable frame raises :class:`~instseg.utils.errors.InvalidInputError`."""
        dirs = {"visible": visible_dir, "holes": holes_dir, "occluder": occluder_dir}
        clip = check_frames(source, dirs, strict=strict, warn=warn)
        if not clip.names:
            raise InvalidInputError(
                f"{source}: no readable frames ({len(clip.skipped)} of {clip.total} unreadable)"
            )
        names = clip.names
        paths = {k: mask_paths(Path(d), names, k) for k, d in dirs.items() if d}
        out = Path(out_dir)
        (out / "frames").mkdir(parents=True, exist_ok=True)
        (out / "amodal").mkdir(parents=True, exist_ok=True)
        reader = WindowReader(source, names)
        hw = reader.frames(0, 1).shape[1:3]  # every frame of a clip has the first one's size

        def read_masks(s: int, e: int) -> WindowMasks:
            return {
                k: np.stack([read_mask(p[i], hw) for i in range(s, e)]) for k, p in paths.items()
            }

        summary = InpaintSummary(
            num_frames=len(names), skipped=clip.skipped, skip_note=clip.summary()
        )
        for k0, k1, res in self._process(len(names), reader.frames, read_masks, label):
            for j, i in enumerate(range(k0, k1)):
                Image.fromarray(res.frames[j]).save(out / "frames" / f"{names[i]}.png")
                Image.fromarray(res.amodal[j].astype(np.uint8) * 255).save(
                    out / "amodal" / f"{names[i]}.png"
                )
            summary.hole_pixels += int(res.holes.sum())
            summary.propagated += int(res.propagated.sum())
            summary.generated += int(res.generated.sum())
            summary.telea += int(res.fallback.sum())
        if fps is None:
            fps = video_fps(source) if is_video(source) else 24.0
        video = write_video(
            out / "video.mp4", (read_image(out / "frames" / f"{n}.png") for n in names), fps=fps
        )
        summary.outputs = {"frames": out / "frames", "amodal": out / "amodal", "video": video}
        atomic_write_json(  # what the outputs were made from (read by `instseg report`)
            out / "inpaint.json",
            {"source": str(Path(source).resolve()), "frames": names, "skipped": clip.skipped}
            | {f"{k}_masks": str(Path(d).resolve()) if d else None for k, d in dirs.items()}
            | {"pipeline": self.describe(), "options": asdict(self.options)},
            indent=2,
        )
        summary.outputs["manifest"] = out / "inpaint.json"
        return summary

    def _process(
        self,
        t_len: int,
        read_frames: Callable[[int, int], np.ndarray],
        read_masks: Callable[[int, int], WindowMasks],
        label: int | None,
    ) -> Iterator[tuple[int, int, InpaintResult]]:
        """The pipeline over a clip of ``t_len`` frames (the only place that splits it in
        time): ``read_frames(start, end)`` / ``read_masks(start, end)`` give frames and masks
        of ``[start, end)`` (starts never decrease); yields ``(keep_start, keep_end, result)``
        per generator window, the result cut to the kept frames.

        1. Amodal masks: given (``holes`` / ``amodal``) per frame; predicted ones (shape
           completion, hull) in a first pass over the windows, each frame's from the window
           that keeps it, stored bit-packed.
        2. Per window ``[s, e)``: the frames, masks and completed flows of ``[s - R, e + R)``
           (R = ``propagation_range``, None: the whole clip) are held (:class:`_Span`, flows in
           ``flow_dtype``, each pair computed once), the window's frames not yet propagated
           are, then the generator (or Telea) fills what is left in the window.
        """
        o = self.options
        probe = read_masks(0, 1)
        stored = None
        if "holes" not in probe and "amodal" not in probe:
            stored = _PackedMasks(t_len)
            for s, e, k0, k1 in temporal_windows(t_len, o.window, o.overlap):
                m = read_masks(s, e)
                am = self.amodal(m["visible"], occluder=m.get("occluder"), label=label)
                for i in range(k0, k1):
                    stored[i] = am[i - s]

        def frame_masks(s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
            """(visible, amodal) of frames [s, e): visible without the given holes."""
            m = read_masks(s, e)
            visible = m["visible"] & ~m["holes"] if "holes" in m else m["visible"]
            if stored is not None:
                return visible, np.stack([stored[i] for i in range(s, e)])
            return visible, self.amodal(visible, holes=m.get("holes"), amodal=m.get("amodal"))

        span = _Span(self, read_frames, frame_masks, t_len)
        rng = o.propagation_range
        bar = progress(total=t_len, desc="inpaint", unit="frame", disable=not self.progress)
        for s, e, k0, k1 in temporal_windows(t_len, o.window, o.overlap):
            lo, hi = (0, t_len) if rng is None else (max(0, s - rng), min(t_len, e + rng))
            span.hold(lo, hi)
            frames, visible, am = span.window(s, e)
            holes = am & ~visible
            out, propagated = span.propagated(s, e)
            left = holes & ~propagated
            generated, fallback = np.zeros_like(holes), np.zeros_like(holes)
            if left.any():
                src = am & ~left if o.leftover_context == "object" else None
                if self.generates:
                    if self.model.generator.residual:  # it corrects Telea's fill
                        out = inpaint_opencv(out, left, method="telea", source=src)
                    out = self.generate(out, left, holes, am)
                    generated = left
                else:
                    out = inpaint_opencv(out, left, method="telea", source=src)
                    fallback = left
            res = InpaintResult(out, am, holes, propagated, generated, fallback)
            kept = slice(k0 - s, k1 - s)
            yield k0, k1, InpaintResult(*(getattr(res, n)[kept] for n in ("frames", *RESULT_MASKS)))
            bar.update(k1 - k0)
        bar.close()

    def amodal(
        self,
        visible: np.ndarray,
        *,
        holes: np.ndarray | None = None,
        occluder: np.ndarray | None = None,
        amodal: np.ndarray | None = None,
        label: int | None = 0,
    ) -> np.ndarray:
        """(T, H, W) bool amodal masks (always a superset of ``visible``): ``visible | holes``
        or ``visible | amodal`` when given, else shape completion (learned) or
        :func:`~instseg.models.inpainting.baselines.hull_amodal` (fallback), clipped to
        ``occluder``."""
        if holes is not None:
            return visible | holes
        if amodal is not None:
            return amodal | visible
        if self.model.shape_net is not None:
            am = self.complete_shape(visible, label)
        elif occluder is not None:
            am = hull_amodal(visible, occluder)
        else:
            raise ValueError(
                "no learned VOIN model is installed, so the region to fill cannot be predicted: "
                "pass --holes (or --occluder-masks for the convex-hull heuristic), or --weights"
            )
        if occluder is not None:
            am = visible | (am & occluder)
        return am

    def complete_shape(self, visible: np.ndarray, label: int | None = 0) -> np.ndarray:
        """(a) Amodal masks (T, H, W) bool from visible masks (T, H, W) bool (a superset)."""
        if self.model.shape_net is None:
            raise ValueError("VOIN: no shape network; pass amodal masks (or holes) instead")
        if not visible.any():
            return visible.copy()
        canvas, boxes = object_canvas(
            visible, size=self.canvas_size, context=self.options.canvas_context
        )
        logits = self.model.shape_logits(torch.from_numpy(canvas), label)
        return (paste_canvas(logits, boxes, visible.shape[1:]) > 0).numpy() | visible

    def complete_flows(
        self, frames: np.ndarray, visible: np.ndarray, amodal: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(b) DIS flows of ``frames`` (T, H, W, 3), filled in the holes (``fill_flow``) and
        refined inside ``amodal`` by the flow network (:attr:`refines_flow`). Returns forward /
        backward (T-1, H, W, 2) float32."""
        fwd, bwd = clip_flows(frames, preset=self.options.flow_preset)
        if self.options.fill_flow:
            fwd, bwd = fill_clip_flows(fwd, bwd, amodal & ~visible, visible)
        if not self.refines_flow:
            return fwd, bwd
        img = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255)
        vis = torch.from_numpy(visible)[:, None].float()
        am = torch.from_numpy(amodal)[:, None].float()
        flows = [torch.from_numpy(f).permute(0, 3, 1, 2) for f in (fwd, bwd)]
        fwd_t, bwd_t = self.model.refine_flows(img, *flows, vis, am)
        return fwd_t.permute(0, 2, 3, 1).numpy(), bwd_t.permute(0, 2, 3, 1).numpy()

    def generate(
        self, frames: np.ndarray, left: np.ndarray, holes: np.ndarray, amodal: np.ndarray
    ) -> np.ndarray:
        """(c) The generator on the object box (amodal and ``left`` over the window plus
        ``generator_margin``), scaled to the scale it was trained at (:attr:`generator_max_side`:
        at most that many pixels; a leftover generator: exactly, ``frames`` then being the
        propagated frames with ``left`` Telea-filled); returns ``frames`` with the ``left``
        pixels replaced."""
        h, w = left.shape[1:]
        ys, xs = np.nonzero((amodal | left).any(0))
        m = self.options.generator_margin
        y0, y1 = max(ys.min() - m, 0), min(ys.max() + 1 + m, h)
        x0, x1 = max(xs.min() - m, 0), min(xs.max() + 1 + m, w)
        crop = (slice(None), slice(y0, y1), slice(x0, x1))
        img = torch.from_numpy(frames[crop]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        masks = [
            torch.from_numpy(np.ascontiguousarray(a[crop]))[:, None].float()
            for a in (left, holes, amodal)
        ]
        gen = self.model.generate(img, *masks, max_side=self.generator_max_side)
        vals = ((gen.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).round()
        out = frames.copy()
        region = out[crop]
        region[left[crop]] = vals[left[crop]].astype(frames.dtype)
        out[crop] = region
        return out


def temporal_windows(t_len: int, window: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Overlapping windows over ``t_len`` frames: ``(start, end, keep_start, keep_end)``.

    Windows of ``window`` frames (the last one shifted back to end at ``t_len``) with stride
    ``window - overlap``; the kept ranges partition ``[0, t_len)``, each frame kept by the
    window where it is most central.
    """
    if t_len <= window:
        return [(0, t_len, 0, t_len)]
    stride = window - overlap
    starts = list(range(0, t_len - window, stride)) + [t_len - window]
    starts = sorted(set(starts))
    owner = [
        max(range(len(starts)), key=lambda i, f=f: (_centrality(f, starts[i], window), -i))
        for f in range(t_len)
    ]
    out = []
    for i, s in enumerate(starts):
        kept = [f for f in range(t_len) if owner[f] == i]
        if kept:
            out.append((s, s + window, kept[0], kept[-1] + 1))
    return out


def _centrality(f: int, start: int, window: int) -> int:
    """Distance of frame ``f`` to the nearer edge of window ``[start, start + window)``."""
    return min(f - start, start + window - 1 - f) if start <= f < start + window else -1


def _check_inputs(frames: np.ndarray, masks: WindowMasks) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    for name, m in masks.items():
        if m.shape != frames.shape[:3]:
            raise ValueError(f"{name} masks {m.shape} do not match frames {frames.shape[:3]}")
    if "holes" in masks and "amodal" in masks:
        raise ValueError("pass either holes or amodal masks, not both")


class _PackedMasks:
    """(H, W) bool masks of ``t_len`` frames stored bit-packed (8x smaller than bool)."""

    def __init__(self, t_len: int) -> None:
        self._bits: list[np.ndarray | None] = [None] * t_len
        self._hw: tuple[int, int] = (0, 0)

    def __setitem__(self, i: int, mask: np.ndarray) -> None:
        self._hw = mask.shape
        self._bits[i] = np.packbits(mask, axis=None)

    def __getitem__(self, i: int) -> np.ndarray:
        bits = self._bits[i]
        if bits is None:
            raise KeyError(f"no mask stored for frame {i}")
        n = self._hw[0] * self._hw[1]
        return np.unpackbits(bits, count=n).astype(bool).reshape(self._hw)


class _Span:
    """The frames ``[lo, hi)`` of a clip that propagation may read: frames, visible and amodal
    masks, the completed flow of each consecutive pair (computed once, stored in
    ``flow_dtype``) and the propagated result of each frame already propagated (computed once:
    windows overlap). :meth:`hold` moves the span forward, dropping what falls before it."""

    def __init__(
        self,
        inp: Inpainter,
        read_frames: Callable[[int, int], np.ndarray],
        frame_masks: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
        t_len: int,
    ) -> None:
        self.inp, self.read_frames, self.frame_masks, self.t_len = (
            inp,
            read_frames,
            frame_masks,
            t_len,
        )
        self.lo = self.hi = 0
        self.frames: dict[int, np.ndarray] = {}
        self.visible: dict[int, np.ndarray] = {}
        self.amodal: dict[int, np.ndarray] = {}
        self.flows: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # pair t -> t+1
        self.done: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # frame -> (frame, filled)

    def hold(self, lo: int, hi: int) -> None:
        """Hold frames ``[lo, hi)`` (``lo`` and ``hi`` never decrease)."""
        for d in (self.frames, self.visible, self.amodal, self.flows, self.done):
            for i in [i for i in d if i < lo]:
                del d[i]
        start = max(self.hi, lo)
        if start < hi:
            frames = self.read_frames(start, hi)
            visible, amodal = self.frame_masks(start, hi)
            _check_inputs(frames, {"visible": visible, "amodal": amodal})
            for j, i in enumerate(range(start, hi)):
                self.frames[i], self.visible[i], self.amodal[i] = frames[j], visible[j], amodal[j]
        self.lo, self.hi = lo, max(self.hi, hi)

    def window(self, s: int, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """frames, visible and amodal masks of ``[s, e)`` (held)."""
        idx = range(s, e)
        return tuple(
            np.stack([d[i] for i in idx]) for d in (self.frames, self.visible, self.amodal)
        )

    def propagated(self, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``[s, e)`` with their holes filled by flow-guided propagation over the held
        span, and the filled pixels (all False without ``use_flow``)."""
        o = self.inp.options
        for i in [i for i in self.done if i < s]:  # windows never go back
            del self.done[i]
        todo = [
            i for i in range(s, e)
            if i not in self.done and (self.amodal[i] & ~self.visible[i]).any()
        ]  # fmt: skip
        if todo and o.use_flow and self.t_len > 1:
            lo, hi = self.lo, self.hi
            frames, visible, amodal = self.window(lo, hi)
            self._complete_flows(lo, hi, frames, visible, amodal)
            fwd = np.stack([self.flows[i][0] for i in range(lo, hi - 1)])
            bwd = np.stack([self.flows[i][1] for i in range(lo, hi - 1)])
            prop = propagate_pixels(
                frames,
                amodal & ~visible,
                fwd,
                bwd,
                amodal=amodal,
                cycle_threshold=o.cycle_threshold,
                max_steps=o.propagation_range,
                targets=[i - lo for i in todo],
            )
            for i in todo:
                self.done[i] = (prop.frames[i - lo], prop.filled[i - lo])
        out, filled = [], []
        for i in range(s, e):
            f, m = self.done.get(i, (self.frames[i], np.zeros_like(self.visible[i])))
            out.append(f)
            filled.append(m)
        return np.stack(out), np.stack(filled)

    def _complete_flows(
        self, lo: int, hi: int, frames: np.ndarray, visible: np.ndarray, amodal: np.ndarray
    ) -> None:
        """Completed flows of the pairs of ``[lo, hi)`` not computed yet (contiguous runs)."""
        dtype = np.dtype(self.inp.options.flow_dtype)
        missing = [i for i in range(lo, hi - 1) if i not in self.flows]
        runs: list[list[int]] = []
        for i in missing:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        for run in runs:
            a, b = run[0] - lo, run[-1] + 2 - lo  # frames of the run's pairs
            fwd, bwd = self.inp.complete_flows(frames[a:b], visible[a:b], amodal[a:b])
            for j, i in enumerate(run):
                self.flows[i] = (fwd[j].astype(dtype), bwd[j].astype(dtype))
