"""Instance-level prototypical cross-attention and the Temporal Segmentation Module
(survey ch. 5.2.3, Fig. 5.3, Eq. 5.8, Tables 5.6-5.7).

Each tracked object is represented by K+ foreground and K- background prototypes: GMM-EM
(:func:`gmm_em_prototypes`) over the object's RoI keys inside its mask (foreground) and
inside its box but outside the mask (background, i.e. the contrastive surroundings). The
object's RoI keys then attend to the two sets separately (Eq. 5.5), giving a foreground and a
background read-out, plus a per-pixel foreground probability from a softmax over the union of
both sets (the "attention maps" of Fig. 5.3). The TSM takes the RoI feature, the initial
(detected or propagated) mask and these maps and predicts refined mask logits, as a residual
on the initial mask's logits.

Propagation (Eq. 5.8), :func:`update_instance_prototypes`, with ``mode``:
``"off"`` (use the current frame's prototypes only), ``"initial"`` (keep the first frame's) or
``"momentum"`` (``bar_k_t = (1 - lambda) bar_k_{t-1} + lambda k_t``, paper best lambda = 0.2).
The current frame's EM is initialised from the accumulated prototypes, so component j keeps
describing the same part of the object over time.

Shapes: M instances, RoI size S (features (M, C, S, S)), N = S * S.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.video.prototypes import gmm_em_prototypes, gmm_logits

__all__ = [
    "InstancePrototypes",
    "InstanceAttention",
    "InstancePrototypeAttention",
    "TemporalSegmentationModule",
    "update_instance_prototypes",
    "tsm_loss",
]

UpdateMode = Literal["off", "initial", "momentum"]


@dataclass(frozen=True)
class InstancePrototypes:
    """Per-instance prototypes: ``fg_keys`` (M, K+, Ck), ``fg_values`` (M, K+, Cv),
    ``bg_keys`` (M, K-, Ck), ``bg_values`` (M, K-, Cv)."""

    fg_keys: Tensor
    fg_values: Tensor
    bg_keys: Tensor
    bg_values: Tensor

    def __len__(self) -> int:
        return int(self.fg_keys.shape[0])

    def __getitem__(self, index: int | slice | Tensor) -> InstancePrototypes:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return InstancePrototypes(*(t[index] for t in self._tensors()))

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.fg_keys, self.fg_values, self.bg_keys, self.bg_values

    @staticmethod
    def cat(items: list[InstancePrototypes]) -> InstancePrototypes:
        return InstancePrototypes(
            *(torch.cat(ts) for ts in zip(*(i._tensors() for i in items), strict=True))
        )

    def detach(self) -> InstancePrototypes:
        return InstancePrototypes(*(t.detach() for t in self._tensors()))


@dataclass
class InstanceAttention:
    """Read-outs for M instances: ``fg`` / ``bg`` (M, Cv, S, S) from the foreground /
    background prototypes (Eq. 5.5, each set separately) and ``fg_prob`` (M, 1, S, S), the
    posterior mass of the foreground prototypes in a softmax over both sets."""

    fg: Tensor
    bg: Tensor
    fg_prob: Tensor


class InstancePrototypeAttention(nn.Module):
    """Fit foreground/background prototypes of instances and attend to them.

    Args:
        in_channels: C of the RoI features.
        key_channels: Ck (1x1 conv, L2-normalised keys); values are a 1x1 conv to Cv.
        value_channels: Cv (default C).
        num_fg, num_bg: K+ and K- (paper: 30 each best, Table 5.6).
        em_iters, sigma: GMM-EM settings (keys are unit vectors).
        mask_threshold: a pixel is foreground where the mask probability is >= this.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        key_channels: int = 64,
        value_channels: int | None = None,
        num_fg: int = 30,
        num_bg: int = 30,
        em_iters: int = 3,
        sigma: float = 0.3,
        mask_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.value_channels = in_channels if value_channels is None else value_channels
        self.key = nn.Conv2d(in_channels, key_channels, 1)
        self.value = nn.Conv2d(in_channels, self.value_channels, 1)
        self.num_fg, self.num_bg, self.em_iters, self.sigma = num_fg, num_bg, em_iters, sigma
        self.mask_threshold = mask_threshold

    def encode(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """(M, C, S, S) -> keys (M, N, Ck) unit-norm, values (M, N, Cv)."""
        k = F.normalize(self.key(feats).flatten(2).transpose(1, 2), dim=-1)
        return k, self.value(feats).flatten(2).transpose(1, 2)

    def fit(
        self, feats: Tensor, masks: Tensor, *, init: InstancePrototypes | None = None
    ) -> InstancePrototypes:
        """feats (M, C, S, S), masks (M, S, S) probabilities at the feature resolution ->
        prototypes. ``init``: the accumulated prototypes (keeps component identity)."""
        if masks.shape != (feats.shape[0], *feats.shape[-2:]):
            raise ValueError(f"masks {tuple(masks.shape)} do not match feats {tuple(feats.shape)}")
        k, v = self.encode(feats)
        fg = (masks.flatten(1) >= self.mask_threshold).float()
        em = {"iters": self.em_iters, "sigma": self.sigma}
        fk, fv, _, _ = gmm_em_prototypes(
            k,
            v,
            num_prototypes=self.num_fg,
            mask=fg,
            init=init.fg_keys if init is not None else "grid",
            **em,
        )
        bk, bv, _, _ = gmm_em_prototypes(
            k,
            v,
            num_prototypes=self.num_bg,
            mask=1.0 - fg,
            init=init.bg_keys if init is not None else "grid",
            **em,
        )
        return InstancePrototypes(fk, fv, bk, bv)

    def attend(self, feats: Tensor, protos: InstancePrototypes) -> InstanceAttention:
        """feats (M, C, S, S), prototypes of the same M instances -> :class:`InstanceAttention`."""
        m, _, s1, s2 = feats.shape
        k, _ = self.encode(feats)
        lf = gmm_logits(k, protos.fg_keys, sigma=self.sigma)  # (M, N, K+) float32
        lb = gmm_logits(k, protos.bg_keys, sigma=self.sigma)
        fg = torch.matmul(lf.softmax(-1), protos.fg_values.float())
        bg = torch.matmul(lb.softmax(-1), protos.bg_values.float())
        joint = torch.cat([lf, lb], -1).softmax(-1)[..., : lf.shape[-1]].sum(-1)

        def to_map(t: Tensor) -> Tensor:
            return t.transpose(1, 2).reshape(m, -1, s1, s2).to(feats.dtype)

        return InstanceAttention(fg=to_map(fg), bg=to_map(bg), fg_prob=to_map(joint.unsqueeze(-1)))


class TemporalSegmentationModule(nn.Module):
    """TSM: [RoI feature, fg read, bg read, fg probability, initial mask] -> refined logits.

    ``num_convs`` 3x3 conv+ReLU at the RoI size S, a 2x transposed conv when the initial mask
    is at 2S (the Mask R-CNN 28x28 grid for 14x14 RoIs), and a zero-initialised 1x1 conv
    whose output is added to the initial mask's logits (so the untrained TSM returns the
    initial mask).

    Args:
        in_channels: C of the RoI features; value_channels: Cv of the read-outs (default C).
        hidden: width of the convs.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        value_channels: int | None = None,
        hidden: int = 128,
        num_convs: int = 2,
    ) -> None:
        super().__init__()
        cv = in_channels if value_channels is None else value_channels
        layers: list[nn.Module] = []
        c = in_channels + 2 * cv + 2
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, hidden, 3, padding=1), nn.ReLU(inplace=True)]
            c = hidden
        self.body = nn.Sequential(*layers)
        self.up = nn.ConvTranspose2d(hidden, hidden, 2, stride=2)
        self.out = nn.Conv2d(hidden, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, feats: Tensor, initial_logits: Tensor, attn: InstanceAttention) -> Tensor:
        """feats (M, C, S, S), initial_logits (M, 1, S, S) or (M, 1, 2S, 2S), attention maps
        at S -> refined logits with the initial mask's size."""
        s = feats.shape[-2:]
        init_small = F.interpolate(
            initial_logits.sigmoid(), size=s, mode="bilinear", align_corners=False
        )
        x = torch.cat([feats, attn.fg, attn.bg, attn.fg_prob, init_small.to(feats.dtype)], 1)
        x = self.body(x)
        if initial_logits.shape[-2:] != s:
            x = F.relu(self.up(x))
            if x.shape[-2:] != initial_logits.shape[-2:]:
                raise ValueError(
                    f"initial mask {tuple(initial_logits.shape[-2:])} must be S or 2S "
                    f"for RoI size {tuple(s)}"
                )
        return initial_logits + self.out(x).to(initial_logits.dtype)


def update_instance_prototypes(
    previous: InstancePrototypes | None,
    current: InstancePrototypes,
    *,
    mode: UpdateMode = "momentum",
    momentum: float = 0.2,
) -> InstancePrototypes:
    """Eq. 5.8 and its ablations (Table 5.7). ``previous`` None (a new track) -> current."""
    if mode not in ("off", "initial", "momentum"):
        raise ValueError(f"mode must be 'off', 'initial' or 'momentum', got {mode!r}")
    if previous is None or mode == "off":
        return current
    if mode == "initial":
        return previous
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    mixed = (
        (1.0 - momentum) * p + momentum * c
        for p, c in zip(previous._tensors(), current._tensors(), strict=True)
    )
    return InstancePrototypes(*mixed)


def tsm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy: logits (M, 1, S', S'), targets (M, S', S') in [0, 1]."""
    if len(logits) == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[:, 0].float(), targets.float())
