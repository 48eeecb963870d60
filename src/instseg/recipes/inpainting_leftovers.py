"""Training data of the *leftover* generator (issue 16): cached propagation leftovers.

What the residual generator (:class:`OcclusionAwareGenerator` ``mode="leftover"``) sees at
inference is the output of the non-learned pipeline on an occluded clip: whole-clip flow-guided
propagation, the pixels it could not reach (the *leftovers*) filled with OpenCV Telea, cropped to
the object's box and scaled so the crop's longer side is the generator's trained size. This
module makes exactly that from the training DAVIS sequences, once, and caches it on disk:

1. :func:`build_leftover_cache`: per training sequence (never one of
   :data:`~instseg.data.davis_splits.VOIN_EVAL`, which raises), ``clips_per_sequence`` clips of
   ``clip_frames`` frames, resized to ``prop_height`` pixels high, occluded like the card's
   evaluation split (:func:`~instseg.data.video_occlusion.make_eval_split`: 20-50 % of the object
   covered by a cutout of another training sequence's object or, with ``synthetic_prob``, a
   synthetic textured shape); the non-learned :class:`~instseg.inference.inpainter.Inpainter`
   (propagation + Telea); the object box over the clip (plus ``margin``) cropped and resized to
   :func:`~instseg.models.inpainting.voin.generator_input_size` (longer side ``crop_size``),
   as :meth:`VOINModel.generate` does. One ``clip_XXXX.npz`` per clip plus ``cache.json``
   (settings and the sequences, so a cache made with other settings is rebuilt, not reused).
2. :func:`leftover_batches`: endless seeded batches of ``clip_len``-frame windows with leftover
   pixels, randomly flipped in x and time, replicate-padded to ``crop_size`` squares.

npz arrays: ``frames`` (T, 3, h, w) float16 in [-1, 1], the propagated + Telea frames (the
generator's input); ``gt`` (T, 3, h, w) float16, the target; ``left`` / ``occluded`` /
``amodal`` (T, 1, h, w) uint8 {0, 1}: the leftovers, the occlusion hole and the object mask.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from instseg.data.davis_splits import VOIN_EVAL
from instseg.data.occluded_clips import load_resized_videos, root_list
from instseg.data.video_occlusion import occlude_clip, occluder_from_mask, synthetic_occluder
from instseg.inference.inpainter import Inpainter, InpaintOptions, LeftoverContext
from instseg.models.inpainting.voin import generator_input_size
from instseg.utils.io import atomic_write_json

__all__ = [
    "CACHE_RECORD",
    "build_leftover_cache",
    "crop_leftover_clip",
    "leftover_batches",
    "load_leftover_cache",
]

log = logging.getLogger(__name__)
CACHE_RECORD = "cache.json"
KEYS = ("frames", "gt", "left", "occluded", "amodal")


def build_leftover_cache(
    root: Path | Sequence[Path],
    sequences: Sequence[str],
    *,
    out_dir: str | Path,
    clips_per_sequence: int,
    clip_frames: int,
    prop_height: int,
    crop_size: int,
    margin: int,
    seed: int,
    synthetic_prob: float = 0.5,
    occlusion_ratio: tuple[float, float] = (0.2, 0.5),
    leftover_context: LeftoverContext = "object",
) -> list[Path]:
    """Write the cache (module docstring) into ``out_dir`` and return its clip files; an
    existing cache made with the same settings is reused as is. ``leftover_context``: what
    Telea draws on for the leftovers (:class:`InpaintOptions`; the generator must run with the
    same at inference). Raises ValueError when ``sequences`` includes a held-out VOIN evaluation
    sequence."""
    held = sorted(set(sequences) & set(VOIN_EVAL))
    if held:
        raise ValueError(f"leftover cache: {held} are held out for evaluation (VOIN_EVAL)")
    out = Path(out_dir)
    roots = root_list(root)
    settings = {
        # one root is recorded as a string (caches made before several roots stay valid)
        "root": str(roots[0]) if len(roots) == 1 else [str(r) for r in roots],
        "sequences": list(sequences),
        "clips_per_sequence": clips_per_sequence,
        "clip_frames": clip_frames,
        "prop_height": prop_height,
        "crop_size": crop_size,
        "margin": margin,
        "seed": seed,
        "synthetic_prob": synthetic_prob,
        "occlusion_ratio": list(occlusion_ratio),
    }
    if leftover_context != "frame":  # caches made before the option drew on the whole frame
        settings["leftover_context"] = leftover_context
    record = out / CACHE_RECORD
    if record.is_file():
        rec = json.loads(record.read_text())
        if rec.get("settings") == settings:
            return [out / f for f in rec["files"]]
        log.info("leftover cache %s: other settings, rebuilding", out)
    out.mkdir(parents=True, exist_ok=True)
    videos = load_resized_videos(roots, sequences, 0, prop_height)
    opts = InpaintOptions(use_generator=False, leftover_context=leftover_context)
    inp = Inpainter(model=None, options=opts, progress=False)
    files, stats = [], []
    for si, name in enumerate(sequences):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        frames, masks = videos[si]
        others = [v for j, v in enumerate(videos) if j != si]
        made = 0
        while made < clips_per_sequence:
            n = min(clip_frames, len(frames))
            s = int(rng.integers(len(frames) - n + 1))
            fr, ms = frames[s : s + n], masks[s : s + n]
            if not ms.any((1, 2)).all():
                continue
            if not others or rng.random() < synthetic_prob:
                occ = synthetic_occluder(rng)
            else:
                of, om = others[int(rng.integers(len(others)))]
                k = int(rng.integers(len(of)))
                if not om[k].any():
                    continue
                occ = occluder_from_mask(of[k], om[k], source="cutout")
            clip = occlude_clip(fr, ms, occ, rng=rng, occlusion_ratio=rng.uniform(*occlusion_ratio))
            if not clip.holes.any():
                continue
            res = inp.inpaint(clip.frames, clip.visible, holes=clip.holes)
            arrays = crop_leftover_clip(
                res.frames,
                clip.gt,
                left=res.fallback,
                occluded=clip.holes,
                amodal=clip.amodal,
                crop_size=crop_size,
                margin=margin,
            )
            path = out / f"clip_{len(files):04d}.npz"
            np.savez_compressed(path, **arrays)
            files.append(path)
            stats.append(float(res.fallback.sum() / max(clip.holes.sum(), 1)))
            made += 1
            log.info("leftover cache %s clip %d: leftover %.1f%% of the hole", name, made,
                     100 * stats[-1])  # fmt: skip
    atomic_write_json(
        record,
        {"settings": settings, "files": [f.name for f in files], "leftover_share": stats},
        indent=1,
    )
    return files


def crop_leftover_clip(
    frames: np.ndarray,
    gt: np.ndarray,
    *,
    left: np.ndarray,
    occluded: np.ndarray,
    amodal: np.ndarray,
    crop_size: int,
    margin: int,
) -> dict[str, np.ndarray]:
    """The generator's view of one clip, as :meth:`Inpainter.generate` /
    :meth:`VOINModel.generate` make it: the box of ``amodal | left`` over the clip plus
    ``margin``, resized (bilinear; masks nearest, ``left`` also max-pooled) to
    :func:`generator_input_size` with longer side ``crop_size``.

    Args:
        frames / gt: (T, H, W, 3) uint8 (propagated + Telea frames, target).
        left / occluded / amodal: (T, H, W) bool.
    Returns:
        the npz arrays of the module docstring.
    """
    h, w = left.shape[1:]
    ys, xs = np.nonzero((amodal | left).any(0))
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + 1 + margin, h)
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + 1 + margin, w)
    th, tw = generator_input_size(y1 - y0, x1 - x0, max_side=crop_size, exact=True)

    def img(a: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a[:, y0:y1, x0:x1])).permute(0, 3, 1, 2)
        t = F.interpolate(t.float() / 127.5 - 1, size=(th, tw), mode="bilinear")
        return t.numpy().astype(np.float16)

    def mask(a: np.ndarray, pool: bool = False) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a[:, y0:y1, x0:x1]))[:, None].float()
        small = F.interpolate(t, size=(th, tw), mode="nearest")
        if pool:
            small = torch.maximum(small, F.adaptive_max_pool2d(t, (th, tw)))
        return small.numpy().astype(np.uint8)

    return {
        "frames": img(frames),
        "gt": img(gt),
        "left": mask(left, pool=True),
        "occluded": mask(occluded),
        "amodal": mask(amodal),
    }


def load_leftover_cache(files: Sequence[Path]) -> list[dict[str, np.ndarray]]:
    """The cached clips in memory (each a dict of the module docstring's arrays)."""
    out = []
    for f in files:
        with np.load(f) as z:
            out.append({k: z[k] for k in KEYS})
    return out


def leftover_batches(
    clips: Sequence[dict[str, np.ndarray]],
    *,
    batch: int,
    clip_len: int,
    crop_size: int,
    seed: int,
    skip: int = 0,
) -> Iterator[dict[str, Tensor]]:
    """Endless batches for the leftover generator stage: ``frames`` / ``gt`` (B, T, 3, S, S)
    float in [-1, 1], ``holes`` (the leftovers), ``occluded`` and ``amodal`` (B, T, 1, S, S)
    float {0, 1}; S = ``crop_size``, T = ``clip_len``. Windows are drawn with a generator
    seeded ``seed`` among those with leftover pixels, flipped in x and in time with
    probability 1/2 each, replicate-padded (images; masks zero-padded) to S x S; ``skip``
    batches are drawn and dropped (a resumed run)."""
    windows = [
        (i, s)
        for i, c in enumerate(clips)
        for s in range(len(c["left"]) - clip_len + 1)
        if c["left"][s : s + clip_len].any()
    ]
    if not windows:
        raise ValueError("leftover cache: no window with leftover pixels")
    rng = np.random.default_rng(seed)
    drawn = 0
    while True:
        items = []
        for _ in range(batch):
            i, s = windows[int(rng.integers(len(windows)))]
            flip_x, flip_t = rng.random() < 0.5, rng.random() < 0.5
            item = {}
            for k in KEYS:
                a = torch.from_numpy(clips[i][k][s : s + clip_len].astype(np.float32))
                if flip_x:
                    a = a.flip(-1)
                if flip_t:
                    a = a.flip(0)
                item[k] = _pad(a, crop_size, replicate=k in ("frames", "gt"))
            items.append(item)
        drawn += 1
        if drawn <= skip:
            continue
        out = {k: torch.stack([it[k] for it in items]) for k in KEYS}
        out["holes"] = out.pop("left")
        yield out


def _pad(a: Tensor, size: int, *, replicate: bool) -> Tensor:
    """(T, C, h, w) -> (T, C, size, size): bottom / right padding."""
    ph, pw = size - a.shape[-2], size - a.shape[-1]
    if ph < 0 or pw < 0:
        raise ValueError(f"cached crop {tuple(a.shape[-2:])} larger than crop_size {size}")
    if ph == 0 and pw == 0:
        return a
    return F.pad(a, (0, pw, 0, ph), mode="replicate" if replicate else "constant")
