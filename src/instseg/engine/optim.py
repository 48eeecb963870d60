"""Optimizers and per-iteration learning-rate schedules.

Schedules are :class:`torch.optim.lr_scheduler.LambdaLR` driven by a :class:`LRFactor` object:
the factor's numbers live in its ``__dict__``, so ``scheduler.state_dict()`` holds only plain
numbers and resumes exactly (and loads with ``torch.load(weights_only=True)``).

The scheduler is stepped once per training iteration (not per epoch). The factor at iteration
``it`` is ``warmup(it) * main(it)`` with::

    warmup(it) = warmup_factor + (1 - warmup_factor) * it / warmup_iters   (it < warmup_iters)
    cosine:   main(it) = min_lr_factor + (1 - min_lr_factor) * (1 + cos(pi * it / max_iters)) / 2
    step:     main(it) = gamma ** (number of milestones in ``steps`` that are <= it)
    constant: main(it) = 1
"""

from __future__ import annotations

import bisect
import math
from typing import Literal

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["LRFactor", "build_optimizer", "build_scheduler", "param_groups"]

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    no_decay_norm_bias: bool = True,
    lr: float | None = None,
    lr_factors: dict[str, float] | None = None,
) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group.

    With ``no_decay_norm_bias``, parameters of normalisation layers (BatchNorm, GroupNorm,
    LayerNorm, ...) and every parameter named ``bias`` get ``weight_decay=0``. Parameters
    shared by several modules are listed once; frozen ones (``requires_grad=False``) are left
    out; empty groups are dropped. ``lr_factors`` maps a module-name prefix (e.g.
    ``"backbone.bottom_up"``) to a factor: its parameters get groups of their own with
    ``lr * factor`` (e.g. a pretrained backbone fine-tuned 10x slower than the new layers);
    the groups without a factor come first.
    """
    factors = {k.rstrip("."): float(v) for k, v in (lr_factors or {}).items() if v != 1.0}
    if factors and lr is None:
        raise ValueError("param_groups: lr_factors needs the base lr")
    buckets: dict[tuple[float, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        is_norm = isinstance(module, _NORM_TYPES)
        factor = next(
            (f for pre, f in factors.items() if mod_name == pre or mod_name.startswith(pre + ".")),
            1.0,
        )
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            skip = no_decay_norm_bias and (is_norm or name == "bias")
            buckets.setdefault((factor, skip), []).append(p)
    groups = []
    for factor in [1.0, *sorted(set(factors.values()))]:
        for skip in (False, True):
            params = buckets.get((factor, skip))
            if not params:
                continue
            group: dict = {"params": params, "weight_decay": 0.0 if skip else weight_decay}
            if factor != 1.0:
                group["lr"] = lr * factor
            groups.append(group)
    return groups


def build_optimizer(
    model: nn.Module,
    *,
    name: Literal["adamw", "sgd"] = "adamw",
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    no_decay_norm_bias: bool = True,
    lr_factors: dict[str, float] | None = None,
) -> torch.optim.Optimizer:
    """AdamW or SGD (with ``momentum``) over :func:`param_groups` of ``model``
    (``lr_factors``: per module-name prefix learning-rate factors)."""
    groups = param_groups(
        model,
        weight_decay=weight_decay,
        no_decay_norm_bias=no_decay_norm_bias,
        lr=lr,
        lr_factors=lr_factors,
    )
    if not groups:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer name {name!r} (expected 'adamw' or 'sgd')")


class LRFactor:
    """Multiplicative LR factor as a function of the iteration (see module docstring).

    A plain object (not a closure) so LambdaLR saves its numbers in ``state_dict``.
    """

    def __init__(
        self,
        *,
        name: Literal["cosine", "step", "constant"],
        max_iters: int,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
        steps: tuple[int, ...] = (),
        gamma: float = 0.1,
        min_lr_factor: float = 0.0,
    ) -> None:
        if name not in ("cosine", "step", "constant"):
            raise ValueError(f"unknown schedule {name!r} (expected 'cosine', 'step', 'constant')")
        if max_iters <= 0:
            raise ValueError(f"max_iters must be positive, got {max_iters}")
        if list(steps) != sorted(steps):
            raise ValueError(f"steps must be increasing, got {steps}")
        self.name = name
        self.max_iters = int(max_iters)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.steps = tuple(int(s) for s in steps)
        self.gamma = float(gamma)
        self.min_lr_factor = float(min_lr_factor)

    def __call__(self, it: int) -> float:
        return self._warmup(it) * self._main(it)

    def _warmup(self, it: int) -> float:
        if it >= self.warmup_iters:
            return 1.0
        alpha = it / self.warmup_iters
        return self.warmup_factor * (1.0 - alpha) + alpha

    def _main(self, it: int) -> float:
        if self.name == "cosine":
            t = min(it, self.max_iters) / self.max_iters
            cos = 0.5 * (1.0 + math.cos(math.pi * t))
            return self.min_lr_factor + (1.0 - self.min_lr_factor) * cos
        if self.name == "step":
            return self.gamma ** bisect.bisect_right(self.steps, it)
        return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    name: Literal["cosine", "step", "constant"] = "cosine",
    max_iters: int,
    warmup_iters: int = 0,
    warmup_factor: float = 0.001,
    steps: tuple[int, ...] = (),
    gamma: float = 0.1,
    min_lr_factor: float = 0.0,
) -> LambdaLR:
    """Per-iteration LambdaLR (warmup then cosine / step / constant); resumable via state_dict."""
    factor = LRFactor(
        name=name,
        max_iters=max_iters,
        warmup_iters=warmup_iters,
        warmup_factor=warmup_factor,
        steps=tuple(steps),
        gamma=gamma,
        min_lr_factor=min_lr_factor,
    )
    return LambdaLR(optimizer, lr_lambda=factor)
