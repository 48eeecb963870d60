"""Exponential moving average (EMA) of a model's weights, as timm's ``ModelEmaV3`` and
Ultralytics' ``ModelEMA`` keep it: evaluated and saved instead of the raw weights.

Built on :class:`torch.optim.swa_utils.AveragedModel` (``use_buffers=True``: BatchNorm statistics
are averaged too). The decay ramps up with the number of updates ``n``::

    d(n) = decay * (1 - exp(-n / tau))

so the first updates follow the raw weights closely (a plain EMA at ``decay = 0.9998`` would
still be ~80% the random init after 1000 steps).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["ModelEMA"]


class ModelEMA:
    """``ema = ModelEMA(model, decay=0.9998, tau=2000)``; ``ema.update(model)`` after each
    optimizer step; ``ema.module`` is the averaged copy (same class as ``model``, eval it or
    save its ``state_dict()``); ``state_dict()`` / ``load_state_dict()`` for checkpoints."""

    def __init__(self, model: nn.Module, *, decay: float = 0.9998, tau: float = 2000.0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if tau <= 0:
            raise ValueError(f"EMA tau must be > 0, got {tau}")
        self.decay = float(decay)
        self.tau = float(tau)
        self._avg = AveragedModel(model, multi_avg_fn=self._multi_avg, use_buffers=True)
        self._avg.requires_grad_(False)
        self._avg.eval()

    @property
    def module(self) -> nn.Module:
        """The averaged model (its parameters and buffers are the EMA)."""
        return self._avg.module

    @property
    def updates(self) -> int:
        return int(self._avg.n_averaged.item())

    def current_decay(self, updates: int | None = None) -> float:
        """d(n) for ``n`` updates already averaged (default: the current count)."""
        n = self.updates if updates is None else updates
        return self.decay * (1.0 - math.exp(-n / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current parameters and buffers in (the first call copies them)."""
        self._avg.update_parameters(model)
        self._avg.module.eval()

    def _multi_avg(self, averaged: list[Tensor], current: list[Tensor], num_averaged: Any) -> None:
        d = self.current_decay(int(num_averaged))
        floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floats:
            a_list, c_list = zip(*floats, strict=True)
            torch._foreach_lerp_(list(a_list), list(c_list), 1.0 - d)
        for a, c in zip(averaged, current, strict=True):  # integer buffers (BN counters) follow
            if not a.is_floating_point():
                a.copy_(c)

    def state_dict(self) -> dict[str, Tensor]:
        return self._avg.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._avg.load_state_dict(state)
