"""Frame-level prototypical cross-attention, PCAM (survey ch. 5.2.2-5.2.3, Eqs. 5.5-5.7).

Per memory frame t^, the frame's keys are condensed into K key/value prototypes by GMM-EM
(:func:`gmm_em_prototypes`). The current frame's keys attend to each memory frame's prototypes
separately (Eq. 5.6, Euclidean-distance softmax with temperature ``2 sigma^2``), giving one
aligned feature y_t^ per memory frame. The current frame is the last term of Eq. 5.7's sum
(t^ = t): its keys read its *own* prototypes the same way, y_t.

Kernel scale: ``sigma`` is set per frame from the current keys, ``sigma^2 = 0.1 *
lambda_max(cov(keys))`` (:func:`~instseg.models.video.prototypes.data_sigma`): EM keeps all
prototypes at the mean exactly when ``sigma^2 >= lambda_max``, and a fixed 0.3 was above that
for tight keys (the first shipped model's P5: responsibility entropy 1.0, all 16 prototypes
equal, i.e. a global average pool).

Eq. 5.7 weights: ``w_t^ = softmax_t^(log p(k_ti | GMM_t^))``, the log-likelihood of the pixel's
key under frame t^'s prototype mixture (Eq. 5.2, uniform priors, the frame's sigma): the
posterior over frames of which frame's prototypes explain the pixel. It replaces the paper's
``exp(y_t . y_t^)`` for two measured reasons: raw value dot products saturate (wide values), and
the cosine of the value reads with a temperature (the first trained models' rule, kept as
``aggregate="cosine"``) is ~1 for every frame, so the weights came out ~1/(T+1), a plain
average. The likelihood is on the same scale as the attention itself: equal for frames that
explain the pixel equally well (a still background), lower by ``exp(-delta d^2 / 2 sigma^2)``
for a frame whose nearest prototype is farther (a cut, an occluder that is gone), ~0 when it
lies far away. Weights files record the settings they were trained
with (``training["pcam"]``; :data:`LEGACY_PCAM_SETTINGS` for files without them).

The aggregate is fused with the current FPN feature by a zero-initialised 1x1 convolution on
``[x, y_bar]`` (so an untrained module is the identity and the image model it extends is
unchanged at start).

Cost per frame: O(iters * HW * K * C) for the current frame's prototypes (cached in a
:class:`PrototypeMemory`, never recomputed) plus O(T * HW * K * C) to read T memory frames,
i.e. linear in T; the bank holds at most ``capacity`` frames x K prototypes per level.

Multi-level (Table 5.4, P3-P5): :class:`MultiLevelPCAM` holds one independent module per FPN
level (scales differ in statistics; parameters are not shared). Other levels pass through.

:class:`DenseNonLocalAttention` (Eq. 5.1, space-time memory read) and
:class:`MultiHeadSelfAttention` (space-time transformer layer over all T*HW tokens) are the
baselines of Table 5.5, with the same ``read`` interface for ``benchmarks/video_attention.py``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.video.prototypes import (
    Sigma,
    data_sigma,
    gmm_em_prototypes,
    gmm_logits,
    responsibility_entropy,
)

__all__ = [
    "PrototypeMemory",
    "PrototypicalCrossAttention",
    "MultiLevelPCAM",
    "DenseNonLocalAttention",
    "MultiHeadSelfAttention",
    "prototypical_read",
    "temporal_aggregate",
    "build_multilevel_pcam",
    "PCAM_SETTINGS",
    "LEGACY_PCAM_SETTINGS",
    "default_pcam_settings",
]


@dataclass(frozen=True)
class PrototypeMemory:
    """Bounded FIFO bank of per-frame prototypes, per FPN level (immutable: ``push`` returns a
    new bank, so a predictor can keep old states).

    ``keys[level]``: list of at most ``capacity`` tensors (B, K, Ck), oldest first;
    ``values[level]``: matching (B, K, Cv).
    """

    capacity: int
    keys: dict[str, tuple[Tensor, ...]] = field(default_factory=dict)
    values: dict[str, tuple[Tensor, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"PrototypeMemory capacity must be >= 1, got {self.capacity}")

    def push(self, protos: Mapping[str, tuple[Tensor, Tensor]]) -> PrototypeMemory:
        """Append one frame's ``{level: (key_protos, value_protos)}``; drop the oldest frame
        of a level once it holds ``capacity`` frames."""
        keys, values = dict(self.keys), dict(self.values)
        for level, (k, v) in protos.items():
            keys[level] = (*keys.get(level, ()), k)[-self.capacity :]
            values[level] = (*values.get(level, ()), v)[-self.capacity :]
        return PrototypeMemory(capacity=self.capacity, keys=keys, values=values)

    def num_frames(self, level: str) -> int:
        return len(self.keys.get(level, ()))

    def stacked(self, level: str) -> tuple[Tensor, Tensor] | None:
        """-> (B, T, K, Ck), (B, T, K, Cv), or None when the level is empty."""
        if not self.num_frames(level):
            return None
        return torch.stack(self.keys[level], 1), torch.stack(self.values[level], 1)

    def num_prototypes(self) -> int:
        """Total stored prototypes over levels and frames (for one batch element)."""
        return sum(int(k.shape[1]) for ks in self.keys.values() for k in ks)


class PrototypicalCrossAttention(nn.Module):
    """PCAM on one FPN level.

    Args:
        in_channels: C of the FPN feature.
        key_channels: Ck of the keys (two parallel 1x1 convs predict keys and values).
        value_channels: Cv of the values (default C).
        num_prototypes: K per frame (paper: 30-64); 0 turns the memory read off (the Table 5.6
            ablation: the fused feature then only sees the current frame).
        em_iters: EM iterations per frame.
        sigma: GMM standard deviation (keys are L2-normalised: squared distances in [0, 4]),
            or "data": per frame from the current keys, ``sigma^2 = sigma_scale *
            lambda_max(cov(keys))`` (:func:`data_sigma`), so the prototypes do not collapse
            whatever the keys' spread. One sigma per frame serves EM, the frame's reads of its
            own and the memory's prototypes, and its Eq. 5.7 weights.
        sigma_scale: the factor of "data" (< 1: below EM's collapse temperature).
        aggregate: the Eq. 5.7 weights: "likelihood" (the posterior over frames of the
            pixel's key under each frame's prototype mixture, Eq. 5.2: a frame whose
            prototypes do not explain the pixel is suppressed) or "cosine" (``softmax(cos(y_t,
            y_t^) / temperature)`` of the value reads; ~1/(T+1) when the reads agree).
        temperature: tau of the "cosine" weights.
        zero_init: zero the fusion conv so the module starts as the identity (the key/value
            convs then receive gradients only after the first update of the fusion conv).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        key_channels: int = 64,
        value_channels: int | None = None,
        num_prototypes: int = 30,
        em_iters: int = 3,
        sigma: float | Literal["data"] = "data",
        sigma_scale: float = 0.1,
        aggregate: Literal["likelihood", "cosine"] = "likelihood",
        temperature: float = 0.1,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        cv = in_channels if value_channels is None else value_channels
        self.key = nn.Conv2d(in_channels, key_channels, 1)
        self.value = nn.Conv2d(in_channels, cv, 1)
        self.fuse = nn.Conv2d(in_channels + cv, in_channels, 1)
        if zero_init:
            nn.init.zeros_(self.fuse.weight)
            nn.init.zeros_(self.fuse.bias)
        self.num_prototypes, self.em_iters, self.sigma = num_prototypes, em_iters, sigma
        if temperature <= 0 or sigma_scale <= 0:
            raise ValueError(
                f"temperature and sigma_scale must be > 0, got {temperature}, {sigma_scale}"
            )
        if aggregate not in ("likelihood", "cosine") or not (
            sigma == "data" or (isinstance(sigma, (int, float)) and sigma > 0)
        ):
            raise ValueError(f"bad aggregate / sigma: {aggregate!r}, {sigma!r}")
        self.temperature, self.sigma_scale, self.aggregate = temperature, sigma_scale, aggregate

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> keys (B, HW, Ck) L2-normalised, values (B, HW, Cv)."""
        k = F.normalize(self.key(x).flatten(2).transpose(1, 2), dim=-1)
        return k, self.value(x).flatten(2).transpose(1, 2)

    def kernel_sigma(self, keys: Tensor) -> Tensor:
        """(B, HW, Ck) keys -> this frame's sigma (B,) float32 (constant for a fixed one)."""
        if self.sigma != "data":
            return torch.full((len(keys),), float(self.sigma), device=keys.device)
        return data_sigma(keys, scale=self.sigma_scale)

    def prototypes(
        self, keys: Tensor, values: Tensor, *, sigma: Sigma | None = None
    ) -> tuple[Tensor, Tensor]:
        """(B, HW, Ck), (B, HW, Cv) -> (B, K, Ck), (B, K, Cv) by GMM-EM, grid init
        (deterministic, so training and inference see the same procedure); ``sigma``: the
        frame's (default :meth:`kernel_sigma`)."""
        kp, vp, _, _ = gmm_em_prototypes(
            keys,
            values,
            num_prototypes=self.num_prototypes,
            iters=self.em_iters,
            sigma=self.kernel_sigma(keys) if sigma is None else sigma,
            init="grid",
        )
        return kp, vp

    def forward(
        self, x: Tensor, memory: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x: (B, C, H, W) current feature; memory: (B, T, K, Ck), (B, T, K, Cv) prototypes of
        T past frames, or None.

        -> fused feature (B, C, H, W), and this frame's (key, value) prototypes to push."""
        b, _, h, w = x.shape
        k, v = self.encode(x)
        if self.num_prototypes == 0:  # ablation "0 prototypes": no prototypes, no memory
            protos = (k[:, :0], v[:, :0])
            y_bar = v
        else:
            sigma = self.kernel_sigma(k)
            protos = self.prototypes(k, v, sigma=sigma)
            y_bar = self.read(k, *protos, memory, sigma=sigma)
        y_bar = y_bar.transpose(1, 2).reshape(b, -1, h, w)
        return x + self.fuse(torch.cat([x, y_bar.to(x.dtype)], 1)), protos

    def read(
        self,
        k: Tensor,
        own_keys: Tensor,
        own_values: Tensor,
        memory: tuple[Tensor, Tensor] | None = None,
        *,
        sigma: Sigma | None = None,
    ) -> Tensor:
        """Eqs. 5.6-5.7: keys (B, N, Ck), this frame's prototypes (B, K, Ck), (B, K, Cv), the
        memory (B, T, K, Ck), (B, T, K, Cv) or None -> (B, N, Cv). ``sigma``: the current
        frame's (default :meth:`kernel_sigma` of ``k``)."""
        s = self.kernel_sigma(k) if sigma is None else sigma
        own, own_ll = prototypical_read(
            k, own_keys[:, None], own_values[:, None], sigma=s, return_log_likelihood=True
        )
        if memory is None:
            return own[:, 0]
        y, ll = prototypical_read(k, *memory, sigma=s, return_log_likelihood=True)
        if self.aggregate == "cosine":
            return temporal_aggregate(own[:, 0], y, temperature=self.temperature)
        return temporal_aggregate(own[:, 0], y, logits=torch.cat([ll, own_ll], 1))

    @torch.no_grad()
    def diagnostics(
        self, x: Tensor, memory: tuple[Tensor, Tensor] | None = None
    ) -> dict[str, float]:
        """Is the module selective? (the liveness checks of issue 15, D3) x (B, C, H, W), memory
        as in :meth:`forward` -> ``resp_entropy``: the current keys' responsibilities over the
        frame's own K prototypes (Eq. 5.6), mean entropy / log K (1: the prototypes collapsed
        to one, a global average pool; 0: hard assignments); with memory also
        ``frame_weight_entropy``: the Eq. 5.7 weights over the T memory frames + the current
        one, mean entropy / log(T + 1) (1: a plain average), and ``current_weight``: the mean
        weight on the current frame. Needs K > 0."""
        if self.num_prototypes == 0:
            raise ValueError("diagnostics need prototypes (num_prototypes > 0)")
        k, v = self.encode(x.float())
        s = self.kernel_sigma(k)
        kp, _ = self.prototypes(k, v, sigma=s)
        logits = gmm_logits(k, kp, sigma=s)  # (B, N, K)
        out = {"resp_entropy": float(responsibility_entropy(logits.softmax(-1)).mean())}
        if memory is not None and self.aggregate != "cosine":
            # the current frame's log-likelihood, as prototypical_read computes it for Eq. 5.7
            own_ll = torch.logsumexp(logits, -1, keepdim=True).transpose(1, 2) - math.log(
                kp.shape[1]
            )  # (B, 1, N)
            _, ll = prototypical_read(k, memory[0], memory[0], sigma=s, return_log_likelihood=True)
            w = torch.cat([ll, own_ll], 1).float().softmax(1)  # (B, T+1, N), T >= 1
            h = -(w * w.clamp_min(1e-12).log()).sum(1) / math.log(w.shape[1])
            out["frame_weight_entropy"] = float(h.mean())
            out["current_weight"] = float(w[:, -1].mean())
        return out


PCAM_SETTINGS = ("sigma", "sigma_scale", "aggregate", "temperature")
# how the first trained PCANs read their memory (a fixed sigma of 0.3, cosine Eq. 5.7 weights):
# weights files without recorded settings were trained this way
LEGACY_PCAM_SETTINGS: dict[str, Any] = {
    "sigma": 0.3, "sigma_scale": 0.1, "aggregate": "cosine", "temperature": 0.1,
}  # fmt: skip


def default_pcam_settings() -> dict[str, Any]:
    """:data:`PCAM_SETTINGS` of a :class:`PrototypicalCrossAttention` built with defaults."""
    params = inspect.signature(PrototypicalCrossAttention.__init__).parameters
    return {n: params[n].default for n in PCAM_SETTINGS}


class MultiLevelPCAM(nn.Module):
    """One :class:`PrototypicalCrossAttention` per FPN level (e.g. p3, p4, p5).

    forward(features ``{name: (B, C, H, W)}``, memory) -> (fused features, same keys and order;
    new memory with this frame pushed)."""

    def __init__(self, *, per_level: Mapping[str, PrototypicalCrossAttention]) -> None:
        super().__init__()
        self.levels = nn.ModuleDict(dict(per_level))

    def settings(self) -> dict[str, Any]:
        """The procedure's settings (not learnt), the same on every level: ``sigma``,
        ``sigma_scale``, ``aggregate``, ``temperature`` (what a weights file records, since a
        model reads its memory only the way it was trained to)."""
        out = [{n: getattr(m, n) for n in PCAM_SETTINGS} for m in self.levels.values()]
        if any(o != out[0] for o in out):
            raise ValueError(f"PCAM levels differ in their settings: {out}")
        return out[0] if out else {}

    def configure(self, **settings: Any) -> None:
        """Set ``sigma`` / ``sigma_scale`` / ``aggregate`` / ``temperature`` on every level."""
        unknown = sorted(set(settings) - set(PCAM_SETTINGS))
        if unknown:
            raise ValueError(f"unknown PCAM settings {unknown} (valid: {PCAM_SETTINGS})")
        for m in self.levels.values():
            for k, v in settings.items():
                setattr(m, k, v)

    def forward(
        self, features: Mapping[str, Tensor], memory: PrototypeMemory
    ) -> tuple[dict[str, Tensor], PrototypeMemory]:
        out, protos = dict(features), {}
        for name, module in self.levels.items():
            out[name], protos[name] = module(features[name], memory.stacked(name))
        return out, memory.push(protos)


class DenseNonLocalAttention(nn.Module):
    """Space-time memory read (Eq. 5.1): every current pixel attends to all T*HW memory pixels
    (dot-product, scaled by ``1/sqrt(Ck)``), then the same fusion as PCAM. O(T (HW)^2)."""

    def __init__(
        self, *, in_channels: int, key_channels: int = 64, value_channels: int | None = None
    ) -> None:
        super().__init__()
        cv = in_channels if value_channels is None else value_channels
        self.key = nn.Conv2d(in_channels, key_channels, 1)
        self.value = nn.Conv2d(in_channels, cv, 1)
        self.fuse = nn.Conv2d(in_channels + cv, in_channels, 1)

    def forward(self, x: Tensor, memory_frames: Tensor) -> Tensor:
        """x: (B, C, H, W); memory_frames: (B, T, C, H, W) raw features -> (B, C, H, W)."""
        b, t, c, h, w = memory_frames.shape
        q = self.key(x).flatten(2).transpose(1, 2)  # (B, N, Ck)
        mem = memory_frames.reshape(b * t, c, h, w)
        mk = self.key(mem).reshape(b, t, -1, h * w).permute(0, 1, 3, 2).reshape(b, t * h * w, -1)
        mv = self.value(mem).reshape(b, t, -1, h * w).permute(0, 1, 3, 2).reshape(b, t * h * w, -1)
        attn = (torch.matmul(q, mk.transpose(1, 2)) / math.sqrt(q.shape[-1])).softmax(-1)
        y = torch.matmul(attn, mv).transpose(1, 2).reshape(b, -1, h, w)
        return x + self.fuse(torch.cat([x, y], 1))


class MultiHeadSelfAttention(nn.Module):
    """Space-time transformer layer (VisTR-style): multi-head self-attention over all T*HW
    tokens of the tube (current frame included) + output projection + residual. O((T HW)^2)."""

    def __init__(self, *, in_channels: int, num_heads: int = 8) -> None:
        super().__init__()
        if in_channels % num_heads:
            raise ValueError(f"in_channels {in_channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(in_channels, 3 * in_channels)
        self.proj = nn.Linear(in_channels, in_channels)

    def forward(self, tube: Tensor) -> Tensor:
        """tube: (B, T, C, H, W) -> (B, T, C, H, W)."""
        b, t, c, h, w = tube.shape
        x = tube.permute(0, 1, 3, 4, 2).reshape(b, t * h * w, c)
        q, k, v = (
            self.qkv(x)
            .reshape(b, -1, 3, self.num_heads, c // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        attn = (torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])).softmax(-1)
        y = torch.matmul(attn, v).transpose(1, 2).reshape(b, t * h * w, c)
        y = x + self.proj(y)
        return y.reshape(b, t, h, w, c).permute(0, 1, 4, 2, 3)


# ---------------------------------------------------------------- pure functions


@overload
def prototypical_read(
    keys: Tensor,
    proto_keys: Tensor,
    proto_values: Tensor,
    *,
    sigma: Sigma,
    return_log_likelihood: Literal[False] = False,
) -> Tensor: ...


@overload
def prototypical_read(
    keys: Tensor,
    proto_keys: Tensor,
    proto_values: Tensor,
    *,
    sigma: Sigma,
    return_log_likelihood: Literal[True],
) -> tuple[Tensor, Tensor]: ...


def prototypical_read(
    keys: Tensor,
    proto_keys: Tensor,
    proto_values: Tensor,
    *,
    sigma: Sigma,
    return_log_likelihood: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Eq. 5.6 for every memory frame: (B, N, Ck), (B, T, K, Ck), (B, T, K, Cv) -> (B, T, N, Cv)
    (``sigma``: a number or (B,)); with ``return_log_likelihood`` also (B, T, N) float32
    ``log (1/K sum_k exp(-|k_n - mu_tk|^2 / 2 sigma^2))``, the log-likelihood of each key
    under frame t's prototype mixture (Eq. 5.2 without the constant that all frames share).

    Attention weights are computed in float32."""
    b, t, kk, ck = proto_keys.shape
    q = keys.unsqueeze(1).expand(b, t, -1, ck).reshape(b * t, -1, ck)
    s = sigma.repeat_interleave(t) if isinstance(sigma, Tensor) and sigma.ndim else sigma
    logits = gmm_logits(q, proto_keys.reshape(b * t, kk, ck), sigma=s)  # (BT, N, K)
    y = torch.matmul(logits.softmax(-1), proto_values.reshape(b * t, kk, -1).float())
    y = y.reshape(b, t, -1, y.shape[-1]).to(proto_values.dtype)
    if not return_log_likelihood:
        return y
    ll = torch.logsumexp(logits, -1) - math.log(kk)
    return y, ll.reshape(b, t, -1)


def temporal_aggregate(
    current: Tensor,
    per_frame: Tensor,
    *,
    temperature: float = 0.1,
    logits: Tensor | None = None,
) -> Tensor:
    """Eq. 5.7: (B, N, Cv) current read y_t, (B, T, N, Cv) aligned memory reads y_t^ ->
    (B, N, Cv) ``sum_s w_s y_s`` over the T memory frames and the current frame (last), with
    ``w_s = softmax_s(logits_s)`` per pixel: ``logits`` (B, T+1, N) when given (e.g. the
    log-likelihoods of :func:`prototypical_read`, current frame last), else
    ``cos(y_t, y_s) / temperature``."""
    ys = torch.cat([per_frame, current.unsqueeze(1)], 1).float()  # (B, T+1, N, Cv)
    if logits is None:
        unit = F.normalize(ys, dim=-1)
        logits = (unit * unit[:, -1:]).sum(-1) / temperature  # (B, T+1, N)
    w = logits.float().softmax(1).unsqueeze(-1)
    return (w * ys).sum(1).to(current.dtype)


def build_multilevel_pcam(
    *, levels: Sequence[str], in_channels: int, num_prototypes: int = 30, key_channels: int = 64
) -> MultiLevelPCAM:
    """Convenience: one PCAM per level with the same hyperparameters."""
    return MultiLevelPCAM(
        per_level={
            name: PrototypicalCrossAttention(
                in_channels=in_channels, key_channels=key_channels, num_prototypes=num_prototypes
            )
            for name in levels
        }
    )
