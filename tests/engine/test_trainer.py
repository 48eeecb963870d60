from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _engine_toy import RaiseAt, ToyLoader, ToyModel, run_toy_training

from instseg.engine.optim import build_optimizer
from instseg.engine.trainer import (
    ProgressBar,
    TensorBoardWriter,
    Trainer,
    move_to_device,
    seed_everything,
)
from instseg.structures.batch import Batch

HERE = Path(__file__).resolve().parent


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _plain_trainer(model: ToyModel, out: Path | None = None, **kw) -> Trainer:
    opt = build_optimizer(model, name="adamw", lr=kw.pop("lr", 1e-2), weight_decay=0.0)
    kw.setdefault("data_loader", ToyLoader(seed=0))
    return Trainer(model=model, optimizer=opt, out_dir=out, **kw)


def test_loss_falls_on_tiny_overfit(tmp_path: Path) -> None:
    seed_everything(0)
    model = ToyModel(dropout=0.0)
    trainer = _plain_trainer(
        model, tmp_path, data_loader=ToyLoader(fixed=True), max_iters=80, log_period=5
    )
    trainer.train()
    recs = [r for r in _records(tmp_path) if "total_loss" in r]
    assert [r["iter"] for r in recs] == list(range(5, 81, 5))
    assert {"loss_mse", "loss_l1", "total_loss", "lr", "time", "data_time"} <= recs[0].keys()
    assert recs[-1]["total_loss"] < 0.05 * recs[0]["total_loss"]
    assert recs[0]["total_loss"] == pytest.approx(recs[0]["loss_mse"] + recs[0]["loss_l1"])


@pytest.fixture
def one_thread():
    """Bitwise equality across processes needs the same intra-op thread count everywhere (the
    killed worker runs with OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_resume_after_sigkill_equals_uninterrupted(tmp_path: Path, one_thread) -> None:
    n, k = 10, 4
    full = run_toy_training(tmp_path / "full", max_iters=n)
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(HERE / "_resume_worker.py"), str(killed), str(n), str(k), str(k + 2)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (killed / "last_checkpoint").read_text().strip() == f"model_{k:07d}.pth"
    assert not (killed / "model_final.pth").exists()
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]
    assert max(r["iter"] for r in _records(killed)) == k + 2  # logged past the checkpoint
    with open(killed / "metrics.jsonl", "a") as f:
        f.write('{"iter": 7, "loss_ms')  # a line cut short by the kill
    resumed = run_toy_training(killed, max_iters=n, checkpoint_period=k, resume=True)
    _assert_same_params(full, resumed)
    assert (killed / "model_final.pth").exists()
    # metrics.jsonl: records past the checkpoint were dropped on resume, none duplicated
    got, ref = _records(killed), _records(tmp_path / "full")
    assert [r["iter"] for r in got] == [r["iter"] for r in ref] == list(range(2, n + 1, 2))
    for a, b in zip(got, ref, strict=True):
        assert a["total_loss"] == pytest.approx(b["total_loss"], rel=1e-9)
        assert a["lr"] == b["lr"]


def test_resume_after_exception_bf16(tmp_path: Path) -> None:
    n, k = 8, 3
    full = run_toy_training(tmp_path / "full", max_iters=n, amp="bf16")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_toy_training(
            tmp_path / "b",
            max_iters=n,
            checkpoint_period=k,
            amp="bf16",
            callbacks=[RaiseAt(k + 1)],
        )
    assert not (tmp_path / "b" / "model_final.pth").exists()  # after_train ran, saved nothing
    resumed = run_toy_training(tmp_path / "b", max_iters=n, resume=True, amp="bf16")
    _assert_same_params(full, resumed)


def test_nan_guard_names_term_and_iteration(tmp_path: Path) -> None:
    seed_everything(0)
    ref = ToyModel(dropout=0.0)
    model = ToyModel(dropout=0.0, nan_at=3)
    model.load_state_dict(ref.state_dict())
    _plain_trainer(ref, max_iters=3).train()
    with pytest.raises(FloatingPointError, match=r"'loss_l1' is nan at iteration 3"):
        _plain_trainer(model, tmp_path, max_iters=10).train()
    _assert_same_params(ref, model)  # the bad step did not touch the weights


def test_periodic_eval_logged_once_per_eval(tmp_path: Path) -> None:
    seed_everything(0)
    model = ToyModel()
    modes: list[bool] = []

    def eval_fn() -> dict:
        modes.append(model.training)
        return {"segm": {"AP": float(len(modes))}}

    trainer = _plain_trainer(
        model, tmp_path, max_iters=10, log_period=4, eval_fn=eval_fn, eval_period=5
    )
    trainer.train()
    assert modes == [False, False] and model.training
    evals = [(r["iter"], r["eval"]) for r in _records(tmp_path) if "eval" in r]
    assert evals == [(5, {"segm": {"AP": 1.0}}), (10, {"segm": {"AP": 2.0}})]
    assert [r["iter"] for r in _records(tmp_path) if "lr" in r] == [4, 8, 10]


def test_final_eval_without_period(tmp_path: Path) -> None:
    seed_everything(0)
    trainer = _plain_trainer(ToyModel(), tmp_path, max_iters=3, eval_fn=lambda: {"AP": 0.5})
    trainer.train()
    assert [r for r in _records(tmp_path) if "eval" in r] == [{"iter": 3, "eval": {"AP": 0.5}}]


def test_tensorboard_writer_and_progress_bar(tmp_path: Path, monkeypatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seed_everything(0)
    bar = ProgressBar()
    trainer = _plain_trainer(
        ToyModel(),
        max_iters=6,
        log_period=2,
        eval_fn=lambda: {"AP": 0.25},
        callbacks=[TensorBoardWriter(tmp_path / "tb"), bar],
    )
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bars = []
    orig = ProgressBar.after_step
    monkeypatch.setattr(ProgressBar, "after_step", lambda s, t: (bars.append(s._bar), orig(s, t)))
    trainer.train()
    assert bars[0] is not None and bars[0].n == 6 and bar._bar is None
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/total_loss")]
    assert steps == [2, 4, 6]
    assert [(e.step, e.value) for e in acc.Scalars("eval/AP")] == [(6, 0.25)]


def test_progress_lines_without_tty(capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("INSTSEG_LOG_EVERY", raising=False)
    seed_everything(0)
    bar = ProgressBar()
    trainer = _plain_trainer(ToyModel(), max_iters=5, log_period=2, callbacks=[bar])
    trainer.train()  # pytest captures stderr: not a TTY, so plain lines, no bar
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["train", "2/5"], ["train", "4/5"],
                                                    ["train", "5/5"]]  # fmt: skip
    for line in lines:
        assert re.search(r"total_loss=[-\d.e]+ .*lr=[\d.e-]+ .* it/s .*ETA \d+:\d\d:\d\d", line)
    assert bar._bar is None  # closed


def test_progress_bar_disabled_writes_nothing(capsys) -> None:  # noqa: ANN001
    seed_everything(0)
    trainer = _plain_trainer(ToyModel(), max_iters=3, callbacks=[ProgressBar(enabled=False)])
    trainer.train()
    assert capsys.readouterr().err == ""


def test_fp16_on_cpu_and_bad_loss_are_rejected() -> None:
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        _plain_trainer(ToyModel(), max_iters=1, amp="fp16")

    class Bad(ToyModel):
        def loss(self, batch):  # noqa: ANN001
            return {"loss_vec": batch["x"].sum(1)}

    with pytest.raises(TypeError, match=r"loss_vec.*shape \(8,\)"):
        _plain_trainer(Bad(), max_iters=1).train()
    with pytest.raises(RuntimeError, match="ran out at iteration 0 of 1"):
        _plain_trainer(ToyModel(), max_iters=1, data_loader=[]).train()


def test_grad_clip_logs_norm_and_move_to_device() -> None:
    seed_everything(0)
    trainer = _plain_trainer(ToyModel(), max_iters=2, grad_clip=1e-3)
    trainer.train()
    assert trainer.metrics["grad_norm"] > 1e-3  # the pre-clip norm
    meta = torch.device("meta")
    batch = Batch(images=torch.zeros(1, 3, 4, 4), image_sizes=[(4, 4)])
    moved = move_to_device({"b": batch, "t": (torch.zeros(2), [torch.ones(1)]), "n": 3}, meta)
    assert moved["b"].images.device == meta and isinstance(moved["b"], Batch)
    assert moved["t"][0].device == meta and moved["t"][1][0].device == meta
    assert isinstance(moved["t"], tuple) and moved["n"] == 3


def test_images_channels_last_converts_only_image_tensors() -> None:
    from instseg.engine.trainer import images_channels_last
    from instseg.structures.batch import Batch, ClipBatch

    def batch() -> Batch:
        return Batch(images=torch.rand(2, 3, 8, 10), image_sizes=[(8, 10)] * 2)

    out = images_channels_last(batch())
    assert out.images.is_contiguous(memory_format=torch.channels_last)
    assert not out.images.is_contiguous()  # really NHWC, not a no-op
    clip = images_channels_last(ClipBatch(key=batch(), reference=batch(), memory=(batch(),)))
    for b in (clip.key, clip.reference, *clip.memory):
        assert b.images.is_contiguous(memory_format=torch.channels_last)
    assert images_channels_last({"x": torch.rand(2, 3, 4, 4)})["x"].is_contiguous()
