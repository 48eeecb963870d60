"""Initial optical flow for VOIN (Sect. 5.4.2: "first computes the initial optical flows").

Convention everywhere in ``instseg.models.inpainting``: a flow is (H, W, 2) float32 (numpy) or
(N, 2, H, W) (torch) holding ``(dx, dy)`` in pixels, and ``flow_{a->b}[y, x]`` says that pixel
``(x, y)`` of frame ``a`` is seen at ``(x + dx, y + dy)`` in frame ``b``. For a clip of T frames,
``forward[t]`` is ``t -> t+1`` (defined on frame t) and ``backward[t]`` is ``t+1 -> t`` (defined
on frame t+1); both have shape (T-1, H, W, 2).

- :func:`dis_flow` / :func:`clip_flows`: OpenCV DIS. OpenCV only ships the ULTRAFAST, FAST and
  MEDIUM presets; ``"fine"`` here is MEDIUM refined down to the finest scale with more
  variational iterations (documented choice, slower).
- :class:`RAFTFlow`: torchvision RAFT, only from a weights file the user provides (nothing is
  ever downloaded; no file -> :class:`FileNotFoundError`).
- :func:`warp`: backward warping ``out[y, x] = image[y + dy, x + dx]`` (cv2.remap for numpy,
  ``grid_sample`` for torch).
- :func:`fb_consistency_error` forward-backward cycle error (the end-point error metric is
  :func:`instseg.evaluation.inpainting.flow_epe`).
- :func:`fill_object_flow` / :func:`fill_clip_flows`: the hand-written initial completion of the
  flow inside the occluded part of an object (what the flow completion U-Net refines): flow
  measured on corrupted frames shows the *occluder's* motion there, so it is replaced by a
  normalised convolution (Gaussian-weighted average) of the flow of the object's own visible
  pixels, eroded away from the occluder edge. No library offers masked flow interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DIS_PRESETS",
    "dis_flow",
    "clip_flows",
    "RAFTFlow",
    "warp",
    "fb_consistency_error",
    "fill_object_flow",
    "fill_clip_flows",
]

DIS_PRESETS: tuple[str, ...] = ("ultrafast", "fast", "medium", "fine")
Preset = Literal["ultrafast", "fast", "medium", "fine"]


def dis_flow(img0: np.ndarray, img1: np.ndarray, *, preset: Preset = "medium") -> np.ndarray:
    """DIS optical flow from ``img0`` to ``img1`` ((H, W, 3) RGB or (H, W) gray, uint8).

    Returns (H, W, 2) float32 ``(dx, dy)``.
    """
    if img0.shape != img1.shape:
        raise ValueError(f"dis_flow: image shapes differ {img0.shape} vs {img1.shape}")
    return _dis(preset).calc(_gray(img0), _gray(img1), None).astype(np.float32)


def clip_flows(
    frames: np.ndarray | Sequence[np.ndarray],
    *,
    preset: Preset = "medium",
) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward DIS flows for a clip ``frames`` (T, H, W, 3) uint8.

    Returns ``(forward, backward)``, each (T-1, H, W, 2) float32 (see the module convention).
    """
    gray = [_gray(np.asarray(f)) for f in frames]
    if len(gray) < 2:
        raise ValueError(f"clip_flows: need at least 2 frames, got {len(gray)}")
    dis = _dis(preset)
    fwd = np.stack([dis.calc(a, b, None) for a, b in zip(gray[:-1], gray[1:], strict=False)])
    bwd = np.stack([dis.calc(b, a, None) for a, b in zip(gray[:-1], gray[1:], strict=False)])
    return fwd.astype(np.float32), bwd.astype(np.float32)


def fill_object_flow(
    flow: np.ndarray,
    hole: np.ndarray,
    known: np.ndarray,
    *,
    erode: int = 12,
    sigmas: Sequence[float] = (0.3, 1.0),
) -> np.ndarray:
    """Replace ``flow`` inside ``hole`` by an average of the flow on the ``known`` pixels.

    Args:
        flow: (H, W, 2) float32 flow of one frame (module convention).
        hole: (H, W) bool pixels whose flow is unreliable (the occluded part of the object).
        known: (H, W) bool pixels whose flow is the object's own (its visible part). DIS
            smooths flow across the occluder edge, so the known pixels within ``erode`` pixels
            of the hole are not trusted either: they are filled like the hole (a trajectory
            that lands there must pass the cycle check with the hole's flow), and the average
            is taken over ``known`` eroded by ``erode`` pixels (halved, down to 1, while fewer
            than 16 pixels would survive).
        sigmas: Gaussian widths, as fractions of the object's size ``sqrt(area of hole |
            known)``, tried fine to coarse; a pixel takes the first scale whose weight
            exceeds 1e-3 of the peak; pixels none reach take the median known flow.
    Returns:
        (H, W, 2) float32, equal to ``flow`` outside ``hole`` and its band. Without known
        pixels (completely hidden object) the flow is returned unchanged.

    Defaults measured on DAVIS boat/bus/elephant with pasted occluders (hole EPE against the
    clean-frame DIS flow: 7.3/16.6/10.2 px raw, 2.2/4.9/3.2 with erode 2 and sigmas 0.1/0.3,
    0.6/1.3/1.8 with these): DIS's 12-px patches smear the occluder's motion about that far
    into the object.

    ``erode`` is in pixels and deliberately not scaled with the frame size: the smear comes
    from DIS's patches, whose size is fixed in pixels. Measured for issue 16 on the same
    sequences (first 10 frames, seed 0), mean hole EPE for erode 3 / 6 / 12 / 24: 0.69 / 0.54 /
    0.43 / 0.45 px at 128 px high, 1.42 / 1.12 / 0.84 / 0.69 at 240, - / 2.62 / 1.97 / 1.40 at
    480: shrinking it with the resolution (3 at 128, 6 at 240) is worse at every size. The
    sigmas are fractions of the object size, so they scale already. The propagation's 5-px
    cycle threshold behaves the same way: at 128 px high, 1 or 2 px (5 scaled by 128/480 is
    1.3) lowered bus from 17.2 to 10.7 / 11.4 dB hole PSNR (whole-clip propagation + Telea).
    """
    flow = np.asarray(flow, np.float32)
    hole, known = np.asarray(hole, bool), np.asarray(known, bool) & ~np.asarray(hole, bool)
    if flow.shape[:2] != hole.shape or flow.shape[2:] != (2,) or hole.shape != known.shape:
        raise ValueError(
            f"fill_object_flow: flow {flow.shape}, hole {hole.shape}, known {known.shape}"
        )
    if not hole.any() or not known.any():
        return flow.copy()
    region = hole.copy()
    size = float(np.sqrt((hole | known).sum()))
    # small objects: halve the erosion until at least 16 known pixels survive it
    for e in sorted({erode, erode // 2, erode // 4, min(erode, 1)} - {0}, reverse=True):
        kernel = np.ones((2 * e + 1,) * 2, np.uint8)
        eroded = cv2.erode(known.astype(np.uint8), kernel) > 0
        if eroded.sum() >= 16:
            near_hole = cv2.dilate(hole.astype(np.uint8), kernel) > 0
            region |= known & ~eroded & near_hole
            known = eroded
            break
    # everything happens inside the box of region | known (outside it k = 0 exactly)
    ys, xs = np.nonzero(region | known)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    k = known[box].astype(np.float32)
    fk = np.concatenate([flow[box] * k[..., None], k[..., None]], axis=2)  # (h, w, 3)
    sub = flow[box].copy()
    todo = region[box].copy()
    for frac in sigmas:
        sigma = max(1.0, frac * size)
        num = _gaussian_zero_border(fk, sigma)
        w = num[..., 2]
        ok = todo & (w > 1e-3 * w.max())
        sub[ok] = num[ok, :2] / w[ok, None]
        todo &= ~ok
    if todo.any():
        sub[todo] = np.median(flow[known], axis=0)
    out = flow.copy()
    out[box] = sub
    return out


def _gaussian_zero_border(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (h, w, C) float32 with zeros outside; wide kernels (sigma > 4 px) run on
    a grid downsampled by ``sigma // 4`` (the result is smooth at that scale anyway)."""
    f = max(1, int(sigma // 4))
    h, w = x.shape[:2]
    if f > 1 and min(h, w) >= 2 * f:
        small = cv2.resize(x, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / f, borderType=cv2.BORDER_CONSTANT)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)


def fill_clip_flows(
    forward: np.ndarray,
    backward: np.ndarray,
    holes: np.ndarray,
    visible: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fill_object_flow` on every flow of a clip.

    ``forward``/``backward`` (T-1, H, W, 2); ``holes``/``visible`` (T, H, W) bool. ``forward[t]``
    lives on frame t (filled with frame t's masks), ``backward[t]`` on frame t+1.
    """
    fwd = np.stack([fill_object_flow(f, holes[t], visible[t]) for t, f in enumerate(forward)])
    bwd = np.stack(
        [fill_object_flow(b, holes[t + 1], visible[t + 1]) for t, b in enumerate(backward)]
    )
    return fwd, bwd


class RAFTFlow:
    """torchvision RAFT (``raft_small`` / ``raft_large``) loaded from a local weights file.

    ``weights`` is a state dict saved with ``torch.save`` (e.g. the torchvision checkpoint the
    user downloaded themselves). Images are padded to a multiple of 8 and normalised to [-1, 1]
    as RAFT expects.
    """

    def __init__(
        self,
        *,
        weights: str | Path,
        variant: Literal["small", "large"] = "small",
        num_flow_updates: int = 12,
        device: str | torch.device = "cpu",
    ) -> None:
        from torchvision.models.optical_flow import raft_large, raft_small

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: RAFT weights file not found (RAFT is optional; "
                "use dis_flow/clip_flows, or download the weights yourself)"
            )
        if variant not in ("small", "large"):
            raise ValueError(f"variant must be 'small' or 'large', got {variant!r}")
        self.model = (raft_small if variant == "small" else raft_large)(weights=None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            self.model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{path}: not a raft_{variant} state dict ({e})") from e
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.num_flow_updates = num_flow_updates

    @torch.no_grad()
    def __call__(self, img0: np.ndarray, img1: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 x2 -> (H, W, 2) float32 flow ``img0 -> img1``."""
        h, w = img0.shape[:2]
        a, b = (self._prep(x) for x in (img0, img1))
        flows = self.model(a, b, num_flow_updates=self.num_flow_updates)
        return flows[-1][0, :, :h, :w].permute(1, 2, 0).cpu().numpy().astype(np.float32)

    def clip(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like :func:`clip_flows`: (T, H, W, 3) -> forward, backward (T-1, H, W, 2)."""
        fwd = np.stack([self(a, b) for a, b in zip(frames[:-1], frames[1:], strict=False)])
        bwd = np.stack([self(b, a) for a, b in zip(frames[:-1], frames[1:], strict=False)])
        return fwd, bwd

    def _prep(self, img: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        x = x / 127.5 - 1.0
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8), mode="replicate")
        return x.to(self.device)


def warp(
    image: np.ndarray | torch.Tensor,
    flow: np.ndarray | torch.Tensor,
    *,
    mode: Literal["bilinear", "nearest"] = "bilinear",
) -> np.ndarray | torch.Tensor:
    """Backward-warp ``image`` with ``flow``: ``out[y, x] = image[y + dy, x + dx]``.

    numpy: ``image`` (H, W) or (H, W, C), ``flow`` (H, W, 2) -> same shape/dtype as ``image``
    (cv2.remap, zeros outside). torch: ``image`` (N, C, H, W), ``flow`` (N, 2, H, W) ->
    (N, C, H, W) (``grid_sample``, ``align_corners=True``, zeros outside; differentiable).
    Warping frame ``t+1`` with ``forward[t]`` reconstructs frame ``t``.
    """
    if isinstance(image, torch.Tensor):
        if not isinstance(flow, torch.Tensor):
            raise TypeError("warp: image is a tensor, flow must be one too")
        return _warp_torch(image, flow, mode)
    image, flow = np.asarray(image), np.asarray(flow, np.float32)
    h, w = image.shape[:2]
    if flow.shape != (h, w, 2):
        raise ValueError(f"warp: flow shape {flow.shape} does not match image {(h, w)}")
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    interp = cv2.INTER_LINEAR if mode == "bilinear" else cv2.INTER_NEAREST
    src = image.astype(np.float32) if image.dtype == bool else image
    out = cv2.remap(
        src,
        gx + flow[..., 0],
        gy + flow[..., 1],
        interp,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return out.astype(image.dtype) if image.dtype == bool else out


def fb_consistency_error(flow_ab: np.ndarray, flow_ba: np.ndarray) -> np.ndarray:
    """Cycle error ``||f_ab(x) + f_ba(x + f_ab(x))||`` on frame a; (H, W, 2) x2 -> (H, W).

    Pixels whose target leaves the image get ``inf``.
    """
    back = warp(flow_ba, flow_ab)
    h, w = flow_ab.shape[:2]
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    tx, ty = gx + flow_ab[..., 0], gy + flow_ab[..., 1]
    err = np.linalg.norm(flow_ab + back, axis=-1)
    err[(tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)] = np.inf
    return err


# ----------------------------------------------------------------------------------- helpers
def _dis(preset: str) -> cv2.DISOpticalFlow:
    presets = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        "fine": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }
    if preset not in presets:
        raise ValueError(f"unknown DIS preset {preset!r}; choose from {DIS_PRESETS}")
    dis = cv2.DISOpticalFlow_create(presets[preset])
    if preset == "fine":
        dis.setFinestScale(0)
        dis.setGradientDescentIterations(50)
        dis.setVariationalRefinementIterations(10)
    return dis


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f"DIS flow needs uint8 images, got {img.dtype}")
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img)


def _warp_torch(image: torch.Tensor, flow: torch.Tensor, mode: str) -> torch.Tensor:
    n, _, h, w = image.shape
    if flow.shape != (n, 2, h, w):
        raise ValueError(f"warp: flow shape {tuple(flow.shape)} != {(n, 2, h, w)}")
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    x = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    y = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([x, y], dim=-1)
    return F.grid_sample(
        image, grid.to(image.dtype), mode=mode, padding_mode="zeros", align_corners=True
    )
