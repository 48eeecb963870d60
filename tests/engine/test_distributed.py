from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _engine_toy import ToyModel, toy_batch, toy_eval_process, toy_eval_summarize

from instseg.engine import distributed as du
from instseg.engine.checkpoint import load_checkpoint_file
from instseg.engine.optim import build_optimizer
from instseg.engine.trainer import Trainer

HERE = Path(__file__).resolve().parent


def test_single_process_fallbacks(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert du.init_distributed() is False
    assert (du.get_rank(), du.get_world_size(), du.is_main_process()) == (0, 1, True)
    du.barrier()
    assert du.all_gather_object({"a": 1}) == [{"a": 1}]
    assert du.reduce_dict({"b": torch.tensor(2.5), "a": 1}) == {"a": 1.0, "b": 2.5}
    model = ToyModel()
    assert du.wrap_ddp(model) is model
    wrapped = du.LossForward(model)
    assert du.unwrap_model(wrapped) is model
    assert wrapped(toy_batch(0, 0)).keys() == {"loss_mse", "loss_l1"}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        du.init_distributed()


class _ConcatLoader:
    """The union of both ranks' batches at each iteration."""

    def __iter__(self):
        it = 0
        while True:
            a, b = toy_batch(1, it), toy_batch(2, it)
            yield {k: torch.cat([a[k], b[k]]) for k in a}
            it += 1


def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(HERE / "_ddp_worker.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = torch.load(tmp_path / "result.pt", weights_only=True)
    assert res["world"] == 2 and res["n_gathered"] == 2
    assert res["max_rank_diff"] == 0.0  # gradients were all-reduced: ranks stay identical

    # Single process on the union of the two ranks' batches: same update (mean of equal halves).
    model = ToyModel(dropout=0.0)
    model.load_state_dict(res["init"])
    opt = build_optimizer(model, name="sgd", lr=0.05, weight_decay=0.0)
    single = tmp_path / "single"
    Trainer(
        model=model,
        optimizer=opt,
        data_loader=_ConcatLoader(),
        max_iters=4,
        amp="none",
        log_period=1,
        out_dir=single,
    ).train()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(res["final"][k], v, atol=1e-6, rtol=1e-5)
    assert not torch.equal(res["final"]["fc1.weight"], res["init"]["fc1.weight"])

    # reduce_dict logs the mean over ranks = the loss of the union batch.
    ddp_log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    one_log = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert len(ddp_log) == 4  # written by rank 0 only
    for a, b in zip(ddp_log, one_log, strict=True):
        assert a["total_loss"] == pytest.approx(b["total_loss"], rel=1e-5)

    # Sharded evaluation gathered with all_gather_object == single-process evaluation.
    expected = toy_eval_summarize(toy_eval_process(model, range(11)))
    assert res["eval"]["count"] == expected["count"] == 11
    assert res["eval"]["sum"] == pytest.approx(expected["sum"], abs=1e-5)

    ckpt = load_checkpoint_file(tmp_path / "ckpt" / "model_final.pth")
    assert ckpt["iteration"] == 4 and len(ckpt["rng_states"]) == 2
    assert not torch.equal(ckpt["rng_states"][0]["torch"], ckpt["rng_states"][1]["torch"])
    assert list(ckpt["model"]) == list(model.state_dict())  # no DDP / LossForward prefixes
