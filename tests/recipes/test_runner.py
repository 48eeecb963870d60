"""TrainingRun: config.yaml with the precision header, seeding, the Trainer with resume from
``last_checkpoint`` (data positioned at the resumed iteration), the final weights file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.engine.weights import WeightsMeta, read_weights_file
from instseg.recipes.runner import TrainingRun


@dataclass
class _Cfg:
    seed: int = 3
    sizes: list[int] = field(default_factory=lambda: [4, 2])


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"loss": F.mse_loss(self.fc(batch["x"]), batch["y"])}


STARTS: list[int] = []


def _loader(start: int):
    STARTS.append(start)
    it = start
    while True:
        g = torch.Generator().manual_seed(it)
        x = torch.randn(8, 4, generator=g)
        yield {"x": x, "y": x.sum(1, keepdim=True)}
        it += 1


def _train(out: Path, *, resume: bool = False, max_iters: int = 4) -> tuple[TrainingRun, Path]:
    run = TrainingRun(_Cfg(), out_dir=out, seed=3, device="cpu", amp="none")
    net = _Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = run.train(
        model=net, optimizer=opt, make_loader=_loader, max_iters=max_iters, resume=resume,
        progress=False, checkpoint_period=2, log_period=1, tensorboard=False,
    )  # fmt: skip
    assert trainer.iter == max_iters
    path = run.save_weights(net, WeightsMeta(task="propagation"), metrics={"done": 1})
    return run, path


def test_run_writes_config_trains_and_saves(tmp_path):
    run, path = _train(tmp_path / "a")
    lines = (tmp_path / "a" / "config.yaml").read_text().splitlines()
    assert lines[0].startswith("# precision: amp=none -> fp32 on cpu")
    assert "seed: 3" in lines
    assert run.device == torch.device("cpu")
    _, meta = read_weights_file(path, task="propagation")
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == {"done": 1}
    records = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3, 4]


def test_resume_from_an_interrupted_run_is_exact(tmp_path):
    _, full = _train(tmp_path / "full")
    # the same run, killed after the checkpoint at iteration 2
    _train(tmp_path / "cut", max_iters=4)
    (tmp_path / "cut" / "last_checkpoint").write_text("model_0000002.pth\n")
    (tmp_path / "cut" / "model_final.pth").unlink()
    STARTS.clear()
    _, resumed = _train(tmp_path / "cut", resume=True)
    assert STARTS == [2]  # the data starts at the resumed iteration
    a, b = read_weights_file(full)[0], read_weights_file(resumed)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    final = torch.load(tmp_path / "cut" / "model_final.pth", weights_only=True)
    assert final["iteration"] == 4
