"""Toy model, resumable toy loader and toy evaluator shared by the engine tests and workers."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.engine.checkpoint import Checkpointer
from instseg.engine.optim import build_optimizer, build_scheduler
from instseg.engine.trainer import Callback, Trainer, seed_everything

DIM = 8
_W_TRUE = torch.randn(DIM, 1, generator=torch.Generator().manual_seed(1234))


class ToyModel(nn.Module):
    """x (B, 8) -> Linear -> LayerNorm -> ReLU -> Dropout -> Linear -> (B, 1)."""

    def __init__(self, *, hidden: int = 16, dropout: float = 0.1, nan_at: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(DIM, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 1)
        self.nan_at = nan_at
        self.calls = 0

    def forward_features(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(F.relu(self.norm(self.fc1(x)))))

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        pred = self.forward_features(batch["x"])
        l1 = 0.1 * F.l1_loss(pred, batch["y"])
        if self.nan_at is not None and self.calls == self.nan_at:
            l1 = l1 * float("nan")
        self.calls += 1
        return {"loss_mse": F.mse_loss(pred, batch["y"]), "loss_l1": l1}

    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        """(B,) outputs (a toy stand-in for list[Instances])."""
        return self.forward_features(batch["x"])[:, 0]


def toy_batch(seed: int, it: int, *, batch_size: int = 8) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + it)
    x = torch.randn(batch_size, DIM, generator=g)
    y = x @ _W_TRUE + 0.01 * torch.randn(batch_size, 1, generator=g)
    return {"x": x, "y": y}


class ToyLoader:
    """Infinite loader whose batch at iteration ``it`` depends only on (seed, it): resumable by
    setting ``start``. With ``fixed`` it yields the same batch forever (for overfitting)."""

    def __init__(self, *, seed: int = 0, start: int = 0, fixed: bool = False) -> None:
        self.seed = seed
        self.start = start
        self.fixed = fixed

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for it in itertools.count(self.start):
            yield toy_batch(self.seed, 0 if self.fixed else it)


def toy_eval_process(model: ToyModel, ids: Iterable[int]) -> dict[int, float]:
    """Per-sample outputs of the eval set (sample i = row 0 of toy_batch(99, i))."""
    model.eval()
    with torch.no_grad():
        return {i: float(model.predict(toy_batch(99, i, batch_size=1))[0]) for i in ids}


def toy_eval_summarize(per_sample: dict[int, float]) -> dict[str, float]:
    return {"sum": sum(per_sample[i] for i in sorted(per_sample)), "count": len(per_sample)}


class RaiseAt(Callback):
    """Raises ``RuntimeError("simulated crash")`` after iteration ``it`` (to resume from)."""

    def __init__(self, it: int) -> None:
        self.it = it

    def after_step(self, trainer: Trainer) -> None:
        if trainer.iter == self.it:
            raise RuntimeError("simulated crash")


def run_toy_training(
    out_dir: Path,
    *,
    max_iters: int,
    checkpoint_period: int = 0,
    resume: bool = False,
    amp: str = "none",
    callbacks: list[Callback] | None = None,
    seed: int = 0,
) -> ToyModel:
    """Seeded toy training with AdamW + warmup/cosine + grad clipping + checkpoints."""
    seed_everything(seed)
    model = ToyModel()
    opt = build_optimizer(model, name="adamw", lr=1e-2, weight_decay=0.01)
    sched = build_scheduler(
        opt, name="cosine", max_iters=max_iters, warmup_iters=3, warmup_factor=0.1
    )
    ckpt = Checkpointer(model, optimizer=opt, scheduler=sched, save_dir=out_dir)
    loader = ToyLoader(seed=seed)
    trainer = Trainer(
        model=model,
        optimizer=opt,
        scheduler=sched,
        data_loader=loader,
        max_iters=max_iters,
        amp=amp,
        grad_clip=1.0,
        checkpointer=ckpt,
        checkpoint_period=checkpoint_period,
        callbacks=callbacks,
        log_period=2,
        out_dir=out_dir,
    )
    if resume:
        loader.start = trainer.resume_or_load(resume=True)
    trainer.train()
    return model
