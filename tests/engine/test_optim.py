from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from instseg.engine.optim import build_optimizer, build_scheduler, param_groups


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2, bias=False)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.tied = self.fc  # shared module: its weight must be listed once


def _ids(ps) -> set[int]:
    return {id(p) for p in ps}


def test_param_groups_exclude_norm_and_bias_from_decay() -> None:
    net = _Net()
    groups = param_groups(net, weight_decay=0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert _ids(groups[0]["params"]) == _ids([net.conv.weight, net.fc.weight])
    assert len(groups[0]["params"]) == 2
    no_decay = [net.conv.bias, net.bn.weight, net.bn.bias, net.gn.weight, net.gn.bias]
    assert _ids(groups[1]["params"]) == _ids(no_decay)
    flat = param_groups(net, weight_decay=0.05, no_decay_norm_bias=False)
    assert len(flat) == 1 and len(flat[0]["params"]) == 7


def test_build_optimizer_kinds() -> None:
    net = _Net()
    sgd = build_optimizer(net, name="sgd", lr=0.1, weight_decay=1e-4, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-4, 0.0]
    adamw = build_optimizer(net, lr=1e-3, weight_decay=0.05)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 1e-3
    with pytest.raises(ValueError, match="adam"):
        build_optimizer(net, name="adam", lr=1e-3, weight_decay=0.0)  # type: ignore[arg-type]


def _lrs(name: str, n: int, **kw) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, name=name, max_iters=n, **kw)
    out = []
    for _ in range(n + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedule_values() -> None:
    cos = _lrs("cosine", 10, warmup_iters=4, warmup_factor=0.1, min_lr_factor=0.05)
    assert cos[0] == pytest.approx(2.0 * 0.1 * (0.5 * (1 + math.cos(0)) * 0.95 + 0.05))
    assert cos[2] == pytest.approx(2.0 * 0.55 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.2))))
    assert cos[5] == pytest.approx(2.0 * (0.05 + 0.95 * 0.5))
    assert cos[10] == pytest.approx(2.0 * 0.05)
    step = _lrs("step", 10, steps=(3, 7), gamma=0.5)
    assert step == pytest.approx([2.0] * 3 + [1.0] * 4 + [0.5] * 4)
    const = _lrs("constant", 5, warmup_iters=2, warmup_factor=0.5)
    assert const == pytest.approx([1.0, 1.5, 2.0, 2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="schedule"):
        _lrs("poly", 5)
    with pytest.raises(ValueError, match="increasing"):
        _lrs("step", 5, steps=(4, 2))


def test_scheduler_resumes_from_weights_only_state_dict() -> None:
    def make(max_iters: int):
        p = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        return opt, build_scheduler(opt, name="cosine", max_iters=max_iters, warmup_iters=3)

    opt, sched = make(20)
    for _ in range(7):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2, sched2 = make(999)  # wrong numbers on purpose: the state dict restores them
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    a, b = [], []
    for o, s, out in ((opt, sched, a), (opt2, sched2, b)):
        for _ in range(5):
            o.step()
            s.step()
            out.append(o.param_groups[0]["lr"])
    assert a == b and a[-1] < a[0]


def test_lr_factors_give_a_prefix_its_own_groups_and_the_scheduler_keeps_the_ratio() -> None:
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    model.add_module("head", nn.Linear(4, 2))
    opt = build_optimizer(
        model, name="adamw", lr=1e-3, weight_decay=0.1, lr_factors={"backbone": 0.1}
    )
    groups = [(len(g["params"]), g["lr"], g["weight_decay"]) for g in opt.param_groups]
    assert groups == [(1, 1e-3, 0.1), (1, 1e-3, 0.0), (1, 1e-4, 0.1), (3, 1e-4, 0.0)]
    assert opt.param_groups[2]["params"][0] is model.backbone[0].weight
    sched = build_scheduler(opt, name="cosine", max_iters=10, warmup_iters=0)
    for _ in range(4):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[2] == pytest.approx(0.1 * lrs[0]) and lrs[0] < 1e-3
    same = build_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.1, lr_factors={"x": 1.0})
    assert len(same.param_groups) == 2 and torch.is_tensor(same.param_groups[0]["params"][0])
