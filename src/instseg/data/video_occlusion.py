"""Occlusion data for video object inpainting (the YouTube-VOI recipe, paper Sect. 5.4.4).

Any video with per-frame object masks becomes training / evaluation data: an *occluder* (another
object's cutout, taken from another frame or video, or a synthetic textured shape) is pasted over
the target object and moves along a smooth random trajectory. Per frame this gives

- ``amodal``:   the full object mask (the original annotation; for DAVIS it is the *modal*
                annotation, so any real occlusion in the source video stays unmodelled)
- ``holes``:    ``amodal & occluder``, the occluded part of the object = the region to fill
- ``visible``:  ``amodal & ~occluder``; ``visible | holes == amodal`` and they are disjoint
- ``frames``:   the corrupted input (see ``corruption`` below)
- ``gt``:       the target, equal to ``frames`` outside the hole and to the clean frame inside it

``corruption="occluder"`` (default) paints the whole occluder with its own pixels, as a real
occlusion looks; the ground truth is then the *de-occluded* frame (the object drawn back on top of
the occluder, Fig. 5.11), so a method that leaves non-hole pixels untouched scores exactly on them.
``corruption="zero"`` zeroes only the hole pixels (classic video inpainting input) and ``gt`` is the
clean frame. In both modes ``gt`` differs from ``frames`` only inside ``holes``.

The occluder keeps one size for the whole clip (a rigid cutout, no rotation). Its mask centroid
follows the (smoothed) object centroid plus a slow linear drift and two sinusoids with random
phase, with amplitudes relative to the object radius, so it moves smoothly across the object.
Its size is searched (log grid, then bisection) so that the mean per-frame covered fraction
``|holes_t| / |amodal_t|`` hits ``occlusion_ratio``; thin or hollow cutouts on thin objects can
miss it (the achieved ratio is returned and written to the manifest).

:func:`make_eval_split` writes a fixed, seeded split to disk::

    out/manifest.json
    out/{frames,gt}/<seq>/%05d.png          RGB
    out/{visible,holes,amodal,occluder}/<seq>/%05d.png   L, 0/255

One folder per kind with per-sequence subfolders, so ``evaluate_inpainting(pred, out/"gt",
out/"holes")`` matches files by ``<seq>/<frame>``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from instseg.utils.image import read_image
from instseg.utils.io import atomic_write_json

__all__ = [
    "Occluder",
    "OccluderTrack",
    "OccludedClip",
    "load_davis_sequence",
    "occluder_from_mask",
    "synthetic_occluder",
    "sample_occluder_track",
    "render_occlusion",
    "occlude_clip",
    "make_eval_split",
    "SPLIT_KINDS",
]

Corruption = Literal["occluder", "zero"]
SPLIT_KINDS: tuple[str, ...] = ("frames", "gt", "visible", "holes", "amodal", "occluder")


@dataclass
class Occluder:
    """An occluder's appearance in its own frame: ``rgb`` (h, w, 3) uint8, ``mask`` (h, w) bool
    (tight: touches all four borders), ``source`` a human-readable origin string."""

    rgb: np.ndarray
    mask: np.ndarray
    source: str


@dataclass
class OccluderTrack:
    """Where the occluder is: ``centers`` (T, 2) float (x, y) pixel centre per frame and
    ``scale`` the resize factor applied to the occluder patch (same for all frames)."""

    centers: np.ndarray
    scale: float


@dataclass
class OccludedClip:
    """One occluded clip. Arrays: ``frames``/``gt``/``clean`` (T, H, W, 3) uint8;
    ``amodal``/``visible``/``holes``/``occluder`` (T, H, W) bool; ``ratio`` (T,) float, the
    per-frame covered fraction (NaN where the object is empty)."""

    frames: np.ndarray
    gt: np.ndarray
    clean: np.ndarray
    amodal: np.ndarray
    visible: np.ndarray
    holes: np.ndarray
    occluder: np.ndarray
    ratio: np.ndarray
    track: OccluderTrack


def load_davis_sequence(
    root: str | Path,
    name: str,
    *,
    start: int = 0,
    num_frames: int | None = None,
    stride: int = 1,
    resolution: str = "480p",
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Read a DAVIS folder sequence: ``root/JPEGImages/<res>/<name>/*.jpg`` and
    ``root/Annotations/<res>/<name>/*.png`` (any value > 127 is foreground).

    Returns ``frames`` (T, H, W, 3) uint8, ``masks`` (T, H, W) bool and the frame paths.
    """
    img_dir = Path(root) / "JPEGImages" / resolution / name
    ann_dir = Path(root) / "Annotations" / resolution / name
    paths = sorted(p for p in img_dir.glob("*.jpg"))
    if not paths:
        raise FileNotFoundError(f"{img_dir}: no .jpg frames (is this a DAVIS root?)")
    paths = paths[start::stride]
    if num_frames is not None:
        if len(paths) < num_frames:
            raise ValueError(f"{img_dir}: {len(paths)} frames from {start}, {num_frames} wanted")
        paths = paths[:num_frames]
    frames, masks = [], []
    for p in paths:
        frames.append(read_image(p))
        ann = ann_dir / (p.stem + ".png")
        if not ann.is_file():
            raise FileNotFoundError(f"{ann}: annotation missing for frame {p.name}")
        with Image.open(ann) as im:
            m = np.asarray(im.convert("L")) > 127
        if m.shape != frames[-1].shape[:2]:
            raise ValueError(f"{ann}: mask size {m.shape} != frame size {frames[-1].shape[:2]}")
        masks.append(m)
    return np.stack(frames), np.stack(masks), paths


def occluder_from_mask(image: np.ndarray, mask: np.ndarray, *, source: str = "") -> Occluder:
    """Cut the object under ``mask`` (H, W) out of ``image`` (H, W, 3) as a tight occluder."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError(f"occluder_from_mask: empty mask ({source or 'no source'})")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Occluder(
        np.ascontiguousarray(image[y0:y1, x0:x1]),
        np.ascontiguousarray(mask[y0:y1, x0:x1].astype(bool)),
        source,
    )


def synthetic_occluder(rng: np.random.Generator, *, size: int = 96) -> Occluder:
    """A random star-like polygon (5-9 vertices, radial jitter) with a smooth colour gradient
    plus noise texture, ``size`` pixels across before tight cropping."""
    k = int(rng.integers(5, 10))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = rng.uniform(0.55, 1.0, k) * (size / 2 - 1)
    pts = np.stack([size / 2 + rad * np.cos(ang), size / 2 + rad * np.sin(ang)], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, size)[None, :, None] * np.ones((size, 1, 1))
    rgb = c0 * (1 - t) + c1 * t + rng.normal(0, 12, (size, size, 3))
    rgb = cv2.GaussianBlur(np.clip(rgb, 0, 255).astype(np.uint8), (3, 3), 0)
    return occluder_from_mask(rgb, mask.astype(bool), source=f"synthetic:{k}-gon")


def sample_occluder_track(
    masks: np.ndarray,
    occluder: Occluder,
    *,
    rng: np.random.Generator,
    occlusion_ratio: float = 0.3,
    iters: int = 16,
) -> OccluderTrack:
    """A smooth trajectory over the object in ``masks`` (T, H, W) bool and the occluder scale
    whose mean covered fraction is closest to ``occlusion_ratio`` (in (0, 1])."""
    if not 0.0 < occlusion_ratio <= 1.0:
        raise ValueError(f"occlusion_ratio must be in (0, 1], got {occlusion_ratio}")
    if masks.ndim != 3 or not masks.any():
        raise ValueError("sample_occluder_track: masks must be (T, H, W) with some object pixels")
    centers = _smooth_path(masks, rng)
    area = float(masks.reshape(len(masks), -1).sum(1)[masks.any((1, 2))].mean())
    base = float(occluder.mask.sum())

    # c = occluder area / object area. Coverage mostly grows with c, but not always for thin
    # or hollow cutouts, so: coarse log grid, then bisection inside the first bracketing pair.
    def cov(log_c: float) -> float:
        scale = float(np.sqrt(np.exp(log_c) * area / base))
        return float(np.nanmean(_coverage(masks, occluder, centers, scale)))

    grid = np.linspace(np.log(1e-3), np.log(16.0), 21)
    covs = np.array([cov(g) for g in grid])
    i = int(np.argmin(np.abs(covs - occlusion_ratio)))
    best = (abs(covs[i] - occlusion_ratio), grid[i])
    cross = np.nonzero((covs[:-1] < occlusion_ratio) & (covs[1:] >= occlusion_ratio))[0]
    if cross.size:
        lo, hi = grid[cross[0]], grid[cross[0] + 1]
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            c = cov(mid)
            if abs(c - occlusion_ratio) < best[0]:
                best = (abs(c - occlusion_ratio), mid)
            lo, hi = (mid, hi) if c < occlusion_ratio else (lo, mid)
    scale = float(np.sqrt(np.exp(best[1]) * area / base))
    return OccluderTrack(centers=centers, scale=scale)


def render_occlusion(
    frames: np.ndarray,
    masks: np.ndarray,
    occluder: Occluder,
    track: OccluderTrack,
    *,
    corruption: Corruption = "occluder",
) -> OccludedClip:
    """Paste ``occluder`` along ``track`` over ``frames`` (T, H, W, 3) uint8 with object
    ``masks`` (T, H, W) bool; see the module docstring for the outputs."""
    if corruption not in ("occluder", "zero"):
        raise ValueError(f"corruption must be 'occluder' or 'zero', got {corruption!r}")
    frames = np.asarray(frames, np.uint8)
    amodal = np.asarray(masks, bool)
    if frames.shape[:3] != amodal.shape or len(track.centers) != len(frames):
        raise ValueError(
            f"frames {frames.shape}, masks {amodal.shape} and track ({len(track.centers)}) disagree"
        )
    rgb, om, anchor = _scaled(occluder, track.scale)
    occ_masks = np.zeros_like(amodal)
    pasted = frames.copy()
    for t, c in enumerate(track.centers):
        sl_img, sl_patch = _placement(amodal.shape[1:], om.shape, anchor, c)
        if sl_img is None:
            continue
        m = om[sl_patch]
        occ_masks[t][sl_img] = m
        pasted[t][sl_img][m] = rgb[sl_patch][m]
    holes = amodal & occ_masks
    visible = amodal & ~occ_masks
    if corruption == "occluder":
        inp = pasted
        gt = np.where(holes[..., None], frames, pasted)
    else:
        inp = np.where(holes[..., None], np.uint8(0), frames)
        gt = frames.copy()
    area = amodal.reshape(len(frames), -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(area > 0, holes.reshape(len(frames), -1).sum(1) / area, np.nan)
    return OccludedClip(
        frames=inp,
        gt=gt,
        clean=frames,
        amodal=amodal,
        visible=visible,
        holes=holes,
        occluder=occ_masks,
        ratio=ratio.astype(np.float64),
        track=track,
    )


def occlude_clip(
    frames: np.ndarray,
    masks: np.ndarray,
    occluder: Occluder,
    *,
    rng: np.random.Generator,
    occlusion_ratio: float = 0.3,
    corruption: Corruption = "occluder",
) -> OccludedClip:
    """:func:`sample_occluder_track` then :func:`render_occlusion`."""
    track = sample_occluder_track(masks, occluder, rng=rng, occlusion_ratio=occlusion_ratio)
    return render_occlusion(frames, masks, occluder, track, corruption=corruption)


def make_eval_split(
    davis_root: str | Path,
    sequences: Sequence[str],
    *,
    seed: int,
    out_dir: str | Path,
    num_frames: int | None = 20,
    start: int = 0,
    occlusion_ratio: float | tuple[float, float] = (0.2, 0.5),
    occluder_sequences: Sequence[str] = (),
    synthetic_prob: float = 0.5,
    corruption: Corruption = "occluder",
) -> dict[str, Any]:
    """Write a fixed evaluation split (layout in the module docstring) and return its manifest.

    Each sequence gets its own generator ``default_rng([seed, crc32(name)])``, so the output for
    a sequence depends only on ``seed``, its name and the arguments, not on the list order.
    The occluder is a cutout of the object in a random frame of a random ``occluder_sequences``
    entry (never the sequence itself) or, with probability ``synthetic_prob`` (or always when no
    other sequence is given), a :func:`synthetic_occluder`. ``occlusion_ratio`` is a float or a
    ``(low, high)`` range sampled uniformly per sequence.
    """
    out = Path(out_dir)
    manifest: dict[str, Any] = {
        "davis_root": str(davis_root),
        "seed": int(seed),
        "num_frames": num_frames,
        "start": start,
        "corruption": corruption,
        "occlusion_ratio": (
            float(occlusion_ratio)
            if isinstance(occlusion_ratio, (int, float))
            else [float(r) for r in occlusion_ratio]
        ),
        "occluder_sequences": list(occluder_sequences),
        "synthetic_prob": synthetic_prob,
        "layout": "<kind>/<sequence>/%05d.png; kinds: " + ", ".join(SPLIT_KINDS),
        "sequences": {},
    }
    for name in sequences:
        rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
        frames, masks, paths = load_davis_sequence(
            davis_root, name, start=start, num_frames=num_frames
        )
        ratio = (
            float(occlusion_ratio)
            if isinstance(occlusion_ratio, (int, float))
            else float(rng.uniform(*occlusion_ratio))
        )
        pool = [s for s in occluder_sequences if s != name]
        occ = _pick_occluder(davis_root, pool, rng, synthetic_prob)
        clip = occlude_clip(
            frames, masks, occ, rng=rng, occlusion_ratio=ratio, corruption=corruption
        )
        names = _write_clip(out, name, clip)
        manifest["sequences"][name] = {
            "source_frames": [str(p) for p in paths],
            "files": names,
            "occluder": occ.source,
            "occluder_scale": clip.track.scale,
            "target_ratio": ratio,
            "achieved_ratio": float(np.nanmean(clip.ratio)),
            "per_frame_ratio": [round(float(r), 6) for r in clip.ratio],
            "centers": np.round(clip.track.centers, 3).tolist(),
        }
    atomic_write_json(out / "manifest.json", manifest, indent=1)
    return manifest


# ----------------------------------------------------------------------------------- helpers
def _smooth_path(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Object centroid (gaps filled, moving-average smoothed) + drift + sinusoids, (T, 2)."""
    t_len = len(masks)
    cents = np.full((t_len, 2), np.nan)
    for t, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if ys.size:
            cents[t] = xs.mean(), ys.mean()
    idx = np.arange(t_len)
    ok = ~np.isnan(cents[:, 0])
    for d in range(2):
        cents[:, d] = np.interp(idx, idx[ok], cents[ok, d])
    k = min(5, t_len)
    pad = np.pad(cents, ((k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
    cents = np.stack([np.convolve(pad[:, d], np.ones(k) / k, "valid") for d in range(2)], 1)
    radius = np.sqrt(masks.sum((1, 2))[ok].mean() / np.pi)
    u = idx / max(t_len - 1, 1)
    drift = rng.uniform(-1, 1, 2)[None] * (u[:, None] - 0.5) * radius
    freq, phase = rng.uniform(0.3, 1.2, 2), rng.uniform(0, 2 * np.pi, 2)
    wobble = 0.35 * radius * np.sin(2 * np.pi * freq[None] * u[:, None] + phase[None])
    start = rng.uniform(-0.3, 0.3, 2)[None] * radius
    return cents + drift + wobble + start


def _scaled(
    occ: Occluder,
    scale: float,
    *,
    with_rgb: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, tuple[float, float]]:
    """Resized (rgb, mask) and the mask centroid (x, y), the point that follows the track."""
    h, w = occ.mask.shape
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    rgb = cv2.resize(occ.rgb, (nw, nh), interpolation=cv2.INTER_LINEAR) if with_rgb else None
    m = cv2.resize(occ.mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) > 0
    ys, xs = np.nonzero(m)
    anchor = (float(xs.mean()), float(ys.mean())) if ys.size else (nw / 2, nh / 2)
    return rgb, m, anchor


def _placement(
    hw: tuple[int, int], patch: tuple[int, int], anchor: tuple[float, float], center: np.ndarray
):
    """Slices (image, patch) putting patch point ``anchor`` (x, y) at ``center`` (x, y),
    clipped to the image."""
    y0 = int(round(center[1] - anchor[1]))
    x0 = int(round(center[0] - anchor[0]))
    iy0, ix0 = max(y0, 0), max(x0, 0)
    iy1, ix1 = min(y0 + patch[0], hw[0]), min(x0 + patch[1], hw[1])
    if iy1 <= iy0 or ix1 <= ix0:
        return None, None
    return (
        (slice(iy0, iy1), slice(ix0, ix1)),
        (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0)),
    )


def _coverage(masks: np.ndarray, occ: Occluder, centers: np.ndarray, scale: float) -> np.ndarray:
    """Per-frame covered fraction, computed only inside the occluder's box (cheap)."""
    _, om, anchor = _scaled(occ, scale, with_rgb=False)
    area = masks.reshape(len(masks), -1).sum(1).astype(np.float64)
    cov = np.zeros(len(masks))
    for t, c in enumerate(centers):
        sl_img, sl_patch = _placement(masks.shape[1:], om.shape, anchor, c)
        if sl_img is not None:
            cov[t] = np.count_nonzero(masks[t][sl_img] & om[sl_patch])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, cov / area, np.nan)


def _pick_occluder(
    root: str | Path, pool: Sequence[str], rng: np.random.Generator, synthetic_prob: float
) -> Occluder:
    if not pool or rng.random() < synthetic_prob:
        return synthetic_occluder(rng)
    name = pool[int(rng.integers(len(pool)))]
    ann = sorted((Path(root) / "Annotations" / "480p" / name).glob("*.png"))
    if not ann:
        raise FileNotFoundError(f"{Path(root) / 'Annotations/480p' / name}: no annotations")
    i = int(rng.integers(len(ann)))
    img = read_image(Path(root) / "JPEGImages" / "480p" / name / (ann[i].stem + ".jpg"))
    with Image.open(ann[i]) as im:
        m = np.asarray(im.convert("L")) > 127
    return occluder_from_mask(img, m, source=f"{name}/{ann[i].stem}")


def _write_clip(out: Path, name: str, clip: OccludedClip) -> list[str]:
    arrays = {
        "frames": clip.frames,
        "gt": clip.gt,
        "visible": clip.visible,
        "holes": clip.holes,
        "amodal": clip.amodal,
        "occluder": clip.occluder,
    }
    names = [f"{t:05d}.png" for t in range(len(clip.frames))]
    for kind, arr in arrays.items():
        d = out / kind / name
        d.mkdir(parents=True, exist_ok=True)
        for fn, a in zip(names, arr, strict=False):
            img = a if a.dtype == np.uint8 else (a.astype(np.uint8) * 255)
            Image.fromarray(img).save(d / fn)
    return names
