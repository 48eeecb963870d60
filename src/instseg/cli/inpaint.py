"""``instseg inpaint``: occlusion-aware video object inpainting (VOIN, paper Sect. 5.4).

    instseg inpaint --source VIDEO_OR_FRAME_DIR --visible-masks DIR [--holes DIR]
                    [--occluder-masks DIR] --out DIR [--weights W] [--no-flow]
                    [--flow-net | --no-flow-net] [--generator | --no-generator]
                    [--propagation-range R] [--leftover-context object|frame]
                    [--window N --overlap M] [--strict]

Masks are PNGs named like the frames (``<stem>.png``; for a video file the frames are named
``000000``, ``000001``, ...), nonzero = inside. ``--holes`` is the region to fill; without it the
region is ``amodal - visible`` from the learned shape completion (clipped to ``--occluder-masks``
when given). Flow-guided propagation looks over the whole clip (``--propagation-range R``: R
frames each way, bounding memory on long videos); the generator (or, ``--no-generator``, OpenCV
Telea) fills what it leaves, in windows of ``--window`` frames.

Which learned stages run by default is the weights file's recommendation (its meta's
``defaults``, the configuration measured best on its model card): the installed
``voin_default.pt`` runs with the flow completion network and the generator off (propagation on
the non-learned completed flow + the object-context Telea below, 24.08 dB hole PSNR on the
card's DAVIS split vs 23.71 with both on); ``--flow-net`` / ``--generator`` turn them on,
``--no-flow-net`` / ``--no-generator`` off, whatever the file recommends. What propagation
cannot reach is filled occlusion-aware (``--leftover-context object``, the default): Telea draws
only on the object's own known pixels, not on the occluder around the hole (``frame``: plain
Telea, 22.05 dB). Writes
``OUT/frames/<stem>.png``, ``OUT/amodal/<stem>.png`` and ``OUT/video.mp4``. Without
``--weights`` the installed default model is used; when none is installed a warning is printed
and the non-learned fallback runs (DIS flow propagation + OpenCV Telea).

An unreadable frame (a corrupt or truncated image, a video frame that does not decode) or one
whose mask cannot be read is left out with one warning and counted at the end; the other frames
are inpainted as one clip and ``inpaint.json`` lists the skipped names. ``--strict``: the first
one is an error and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from instseg.cli.options import add_strict_argument

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="video file or folder of frames")
    parser.add_argument(
        "--visible-masks",
        required=True,
        type=Path,
        help="folder of visible object masks, <frame stem>.png",
    )
    parser.add_argument(
        "--holes",
        type=Path,
        default=None,
        help="folder of masks of the region to fill (default: amodal shape "
        "completion minus visible)",
    )
    parser.add_argument(
        "--occluder-masks",
        type=Path,
        default=None,
        help="folder of occluder masks; the filled region is clipped to them",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="VOIN weights file (default: the installed voin_default.pt)",
    )
    parser.add_argument(
        "--no-flow",
        action="store_true",
        help="skip flow completion + propagation (all holes to the generator)",
    )
    parser.add_argument(
        "--flow-net",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refine the filled hole flow with the learned flow completion network "
        "(--no-flow-net: the non-learned completion only; default: what the weights file "
        "recommends, off for the installed voin_default.pt, else on)",
    )
    parser.add_argument(
        "--generator",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fill what propagation leaves with the learned generator (--no-generator: OpenCV "
        "Telea; default: what the weights file recommends, off for the installed "
        "voin_default.pt, else on)",
    )
    parser.add_argument(
        "--propagation-range",
        type=int,
        default=None,
        help="frames each way propagation may reach (default: the whole clip; a range bounds "
        "memory: frames, masks and fp16 flows of window + 2 x range frames)",
    )
    parser.add_argument(
        "--generator-max-side",
        type=int,
        default=None,
        help="longest side of the generator's input crop (default: the frame height the "
        "weights' generator was trained at)",
    )
    parser.add_argument(
        "--leftover-context",
        default="object",
        choices=("object", "frame"),  # InpaintOptions.leftover_context
        help="what the Telea fill of the pixels propagation cannot reach draws on: the object's "
        "own known pixels (object, occlusion-aware, the default) or every known pixel (frame: "
        "plain Telea, which also takes the occluder's colours)",
    )
    parser.add_argument("--window", type=int, default=12, help="frames per generator window")
    parser.add_argument("--overlap", type=int, default=4, help="frames shared by two windows")
    parser.add_argument(
        "--label", type=int, default=0, help="class id for a class-aware shape network"
    )
    parser.add_argument(
        "--flow-preset",
        default="medium",
        choices=("ultrafast", "fast", "medium", "fine"),
        help="DIS preset",
    )
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        help="video.mp4 frame rate (default: the source's, or 24)",
    )
    parser.add_argument("--device", default="cpu")
    add_strict_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from instseg.engine.checkpoint import CheckpointError
    from instseg.inference.inpainter import DEFAULT_WEIGHTS, Inpainter, InpaintOptions
    from instseg.utils.errors import one_line

    prog = "instseg inpaint"

    def fail(e: BaseException) -> int:
        """One line with exit status 2, as ``instseg.cli.main`` reports user errors; the
        traceback with ``--debug``."""
        if getattr(args, "debug", False):
            raise e
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2

    if not 0 <= args.overlap < args.window:
        return fail(
            ValueError(f"need 0 <= --overlap < --window, got {args.overlap}, {args.window}")
        )
    try:
        options = InpaintOptions(
            use_flow=not args.no_flow,
            use_flow_net=args.flow_net,
            use_generator=args.generator,
            propagation_range=args.propagation_range,
            generator_max_side=args.generator_max_side,
            window=args.window,
            overlap=args.overlap,
            flow_preset=args.flow_preset,
            leftover_context=args.leftover_context,
        )
    except ValueError as e:
        return fail(e)
    try:
        inp = Inpainter.from_weights(
            args.weights, options=options, device=args.device, progress=not args.no_progress
        )
    except (OSError, ValueError, CheckpointError) as e:
        return fail(e)
    if not inp.learned:
        print(
            f"WARNING: no learned VOIN model is installed ({DEFAULT_WEIGHTS} not found) and "
            "no --weights was given. Using the non-learned fallback: propagation along DIS "
            "flow + OpenCV Telea for the leftovers (no shape completion, no generator).",
            file=sys.stderr,
        )
    elif not inp.meta.trained:
        print(f"WARNING: {inp.source} is marked untrained (meta trained=False)", file=sys.stderr)
    print(f"model: {inp.describe()}")
    if not all(inp.file_defaults.values()):
        off = [k for k, v in inp.file_defaults.items() if not v]
        flags = " ".join("--" + k.removeprefix("use_").replace("_", "-") for k in off)
        print(f"  (the learned stages the weights recommend off run with {flags})")
    try:
        s = inp.run(
            args.source,
            args.visible_masks,
            args.out,
            holes_dir=args.holes,
            occluder_dir=args.occluder_masks,
            fps=args.fps,
            label=args.label,
            strict=args.strict,
            warn=lambda message: print(f"{prog}: warning: {message}", file=sys.stderr),
        )
    except (OSError, ValueError) as e:
        return fail(e)
    share = (lambda n: f"{100 * n / s.hole_pixels:.1f}%") if s.hole_pixels else (lambda n: "-")
    print(
        f"{s.num_frames} frames, {s.hole_pixels} hole pixels: propagated "
        f"{share(s.propagated)}, generated {share(s.generated)}, Telea {share(s.telea)}"
    )
    for k, p in s.outputs.items():
        print(f"  {k}: {p}")
    if s.skipped:
        print(f"{prog}: {s.skip_note}", file=sys.stderr)
    return 0
