"""ModelEMA: the ramped decay, buffers, and an exact resume through the trainer's checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _engine_toy import RaiseAt, ToyLoader, ToyModel
from torch import nn

from instseg.engine.checkpoint import Checkpointer
from instseg.engine.ema import ModelEMA
from instseg.engine.optim import build_optimizer, build_scheduler
from instseg.engine.trainer import Trainer, seed_everything


def test_first_update_copies_then_ramped_lerp() -> None:
    net = nn.Linear(3, 2)
    ema = ModelEMA(net, decay=0.9, tau=2.0)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # first update: a copy
    assert torch.equal(ema.module.weight, net.weight) and ema.updates == 1
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update(net)
    d = 0.9 * (1 - math.exp(-1 / 2.0))  # decay after 1 averaged update
    assert ema.current_decay(1) == pytest.approx(d)
    assert torch.allclose(ema.module.weight, torch.full_like(net.weight, d * 1.0 + (1 - d) * 3.0))
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert ema.current_decay(10**6) == pytest.approx(0.9)


def test_batchnorm_statistics_are_averaged_and_counters_copied() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEMA(net, decay=0.5, tau=1e-6)  # decay 0.5 from the 2nd update on
    ema.update(net)
    net.train()
    net(torch.randn(2, 3, 8, 8) + 5.0)  # moves running_mean, counts a batch
    ema.update(net)
    bn_e, bn = ema.module[1], net[1]
    assert torch.allclose(bn_e.running_mean, 0.5 * bn.running_mean)  # 0.5 * 0 + 0.5 * new
    assert int(bn_e.num_batches_tracked) == int(bn.num_batches_tracked) == 1


def test_rejects_bad_decay() -> None:
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(nn.Linear(1, 1), decay=1.0)


def _train(out: Path, *, max_iters: int, period: int = 0, resume: bool = False, cbs=()) -> ModelEMA:
    seed_everything(0)
    model = ToyModel()
    opt = build_optimizer(model, name="adamw", lr=1e-2, weight_decay=0.01)
    sched = build_scheduler(opt, name="cosine", max_iters=max_iters, warmup_iters=2)
    ema = ModelEMA(model, decay=0.9, tau=3.0)
    ckpt = Checkpointer(model, optimizer=opt, scheduler=sched, save_dir=out)
    loader = ToyLoader(seed=0)
    trainer = Trainer(
        model=model, optimizer=opt, scheduler=sched, data_loader=loader, max_iters=max_iters,
        amp="none", checkpointer=ckpt, checkpoint_period=period, callbacks=list(cbs), ema=ema,
    )  # fmt: skip
    if resume:
        loader.start = trainer.resume_or_load(resume=True)
    trainer.train()
    return ema


def test_ema_follows_training_and_resumes_exactly(tmp_path: Path) -> None:
    full = _train(tmp_path / "full", max_iters=8)
    assert full.updates == 8
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(tmp_path / "b", max_iters=8, period=3, cbs=[RaiseAt(4)])
    assert "ema" in torch.load(tmp_path / "b" / "model_0000003.pth", weights_only=True)
    resumed = _train(tmp_path / "b", max_iters=8, resume=True)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
