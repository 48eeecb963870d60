"""Frame-level prototypical cross-attention, PCAM (survey ch. 5.2.2-5.2.3, Eqs. 5.5-5.7).

Per memory frame t^, the frame's keys are condensed into K key/value prototypes by GMM-EM
(:func:`gmm_em_prototypes`). The current frame's keys attend to each memory frame's prototypes
separately (Eq. 5.6, Euclidean-distance softmax with temperature ``2 sigma^2``), giving one
aligned feature y_t^ per memory frame. The current frame is the last term of Eq. 5.7's sum
(t^ = t): its keys read its *own* prototypes the same way, y_t. The reads are combined per pixel
with weights ``softmax_t^(cos(y_t, y_t^) / tau)`` (Eq. 5.7 with cosine similarity and a
temperature: the paper's raw dot product saturates for wide values, and a raw current value map
v_t in the sum wins every pixel by self-similarity, which switched the memory off in our first
trained model). The aggregate is fused with the current FPN feature by a zero-initialised 1x1
convolution on ``[x, y_bar]`` (so an untrained module is the identity and the image model it
extends is unchanged at start).

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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.video.prototypes import gmm_em_prototypes, gmm_logits

__all__ = [
    "PrototypeMemory",
    "PrototypicalCrossAttention",
    "MultiLevelPCAM",
    "DenseNonLocalAttention",
    "MultiHeadSelfAttention",
    "prototypical_read",
    "temporal_aggregate",
    "build_multilevel_pcam",
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
        sigma: GMM standard deviation; keys are L2-normalised, so distances lie in [0, 4].
        temperature: tau of the Eq. 5.7 weights ``softmax(cos(y_t, y_t^) / tau)``.
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
        sigma: float = 0.3,
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
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> keys (B, HW, Ck) L2-normalised, values (B, HW, Cv)."""
        k = F.normalize(self.key(x).flatten(2).transpose(1, 2), dim=-1)
        return k, self.value(x).flatten(2).transpose(1, 2)

    def prototypes(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """(B, HW, Ck), (B, HW, Cv) -> (B, K, Ck), (B, K, Cv) by GMM-EM, grid init
        (deterministic, so training and inference see the same procedure)."""
        kp, vp, _, _ = gmm_em_prototypes(
            keys,
            values,
            num_prototypes=self.num_prototypes,
            iters=self.em_iters,
            sigma=self.sigma,
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
            protos = self.prototypes(k, v)
            y_bar = self.read(k, *protos, memory)
        y_bar = y_bar.transpose(1, 2).reshape(b, -1, h, w)
        return x + self.fuse(torch.cat([x, y_bar.to(x.dtype)], 1)), protos

    def read(
        self,
        k: Tensor,
        own_keys: Tensor,
        own_values: Tensor,
        memory: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Eqs. 5.6-5.7: keys (B, N, Ck), this frame's prototypes (B, K, Ck), (B, K, Cv), the
        memory (B, T, K, Ck), (B, T, K, Cv) or None -> (B, N, Cv)."""
        own = prototypical_read(k, own_keys[:, None], own_values[:, None], sigma=self.sigma)
        if memory is None:
            return own[:, 0]
        y = prototypical_read(k, *memory, sigma=self.sigma)  # (B, T, N, Cv)
        return temporal_aggregate(own[:, 0], y, temperature=self.temperature)


class MultiLevelPCAM(nn.Module):
    """One :class:`PrototypicalCrossAttention` per FPN level (e.g. p3, p4, p5).

    forward(features ``{name: (B, C, H, W)}``, memory) -> (fused features, same keys and order;
    new memory with this frame pushed)."""

    def __init__(self, *, per_level: Mapping[str, PrototypicalCrossAttention]) -> None:
        super().__init__()
        self.levels = nn.ModuleDict(dict(per_level))

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


def prototypical_read(
    keys: Tensor, proto_keys: Tensor, proto_values: Tensor, *, sigma: float
) -> Tensor:
    """Eq. 5.6 for every memory frame: (B, N, Ck), (B, T, K, Ck), (B, T, K, Cv) -> (B, T, N, Cv).

    Attention weights are computed in float32."""
    b, t, kk, ck = proto_keys.shape
    q = keys.unsqueeze(1).expand(b, t, -1, ck).reshape(b * t, -1, ck)
    logits = gmm_logits(q, proto_keys.reshape(b * t, kk, ck), sigma=sigma)  # (BT, N, K)
    y = torch.matmul(logits.softmax(-1), proto_values.reshape(b * t, kk, -1).float())
    return y.reshape(b, t, -1, y.shape[-1]).to(proto_values.dtype)


def temporal_aggregate(current: Tensor, per_frame: Tensor, *, temperature: float = 0.1) -> Tensor:
    """Eq. 5.7: (B, N, Cv) current read y_t, (B, T, N, Cv) aligned memory reads y_t^ ->
    (B, N, Cv) ``sum_s w_s y_s`` over the T memory frames and the current frame, with
    ``w_s = softmax_s(cos(y_t, y_s) / temperature)`` per pixel."""
    ys = torch.cat([per_frame, current.unsqueeze(1)], 1).float()  # (B, T+1, N, Cv)
    unit = F.normalize(ys, dim=-1)
    logits = (unit * unit[:, -1:]).sum(-1) / temperature  # (B, T+1, N)
    w = logits.softmax(1).unsqueeze(-1)
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
