from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from _engine_toy import ToyModel, toy_batch

from instseg.engine.checkpoint import (
    Checkpointer,
    CheckpointError,
    UntrustedCheckpointError,
    load_checkpoint_file,
    load_model_weights,
    save_weights,
)
from instseg.engine.optim import build_optimizer, build_scheduler


def _setup(save_dir: Path, seed: int = 0):
    torch.manual_seed(seed)
    model = ToyModel()
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.01)
    sched = build_scheduler(opt, name="step", max_iters=20, steps=(2,), warmup_iters=0)
    return model, opt, sched, Checkpointer(model, optimizer=opt, scheduler=sched, save_dir=save_dir)


def _train(model, opt, sched, n: int) -> None:
    for it in range(n):
        loss = sum(model.loss(toy_batch(0, it)).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_save_then_resume_restores_everything(tmp_path: Path) -> None:
    model, opt, sched, ckpt = _setup(tmp_path)
    _train(model, opt, sched, 3)
    path = ckpt.save("model_0000003", iteration=3, note="hello")
    assert (tmp_path / "last_checkpoint").read_text().strip() == path.name
    expected = _draws()

    model2, opt2, sched2, ckpt2 = _setup(tmp_path, seed=1)
    random.seed(5)
    np.random.seed(5)
    assert ckpt2.resume_or_load() == 3
    got = _draws()
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert sched2.get_last_lr() == sched.get_last_lr() and sched2.last_epoch == 3
    assert torch.equal(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )
    assert load_checkpoint_file(path)["note"] == "hello"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # would create the marker file when unpickled


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_untrusted_pickle_is_refused(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    data = {"model": ToyModel().state_dict(), "payload": _Evil(marker)}
    if writer == "torch":
        torch.save(data, path)
    else:
        path.write_bytes(pickle.dumps(data))
    with pytest.raises(UntrustedCheckpointError, match=r"evil\.pth.*weights_only") as err:
        load_model_weights(ToyModel(), path)
    assert "arbitrary Python objects" in str(err.value)
    (tmp_path / "last_checkpoint").write_text("evil.pth\n")
    with pytest.raises(UntrustedCheckpointError, match=r"evil\.pth"):
        Checkpointer(ToyModel(), save_dir=tmp_path).resume_or_load()
    assert not marker.exists()


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    model, opt, sched, ckpt = _setup(tmp_path)
    ckpt.save("model_a", iteration=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, opt, sched, 2)
    real_save = torch.save

    def broken_save(obj, f, *a, **kw):
        Path(f).write_bytes(b"PK\x03\x04partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save("model_a", iteration=3)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_a.pth"]
    model2, _, _, ckpt2 = _setup(tmp_path, seed=1)
    assert ckpt2.resume_or_load() == 1
    for k, v in model2.state_dict().items():
        assert torch.equal(v, before[k])


def test_load_model_weights_reports_mismatches(tmp_path: Path) -> None:
    src = ToyModel(hidden=16)
    sd = src.state_dict()
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "ddp.pth")
    dst = ToyModel(hidden=16)
    assert load_model_weights(dst, tmp_path / "ddp.pth") == ([], [])
    assert torch.equal(dst.fc1.weight, src.fc1.weight)

    bad = {k: v for k, v in sd.items() if not k.startswith("fc2")} | {"extra.w": torch.zeros(1)}
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(
        CheckpointError,
        match=r"bad\.pth.*missing keys \(2\): fc2\.bias, fc2\.weight"
        r".*unexpected keys \(1\): extra\.w",
    ):
        load_model_weights(ToyModel(), tmp_path / "bad.pth")
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatches.*fc1\.weight: file \(16, 8\) vs "
        r"model \(4, 8\)",
    ):
        load_model_weights(ToyModel(hidden=4), tmp_path / "ddp.pth")
    dst = ToyModel()
    with pytest.warns(UserWarning, match="non-strictly"):
        missing, unexpected = load_model_weights(dst, tmp_path / "bad.pth", strict=False)
    assert missing == ["fc2.bias", "fc2.weight"] and unexpected == ["extra.w"]
    assert torch.equal(dst.fc1.weight, src.fc1.weight)


def test_save_weights_half_roundtrip(tmp_path: Path) -> None:
    model = ToyModel(hidden=512)
    full = save_weights(model, tmp_path / "full.pth", meta={"name": "toy"})
    half = save_weights(model, tmp_path / "half.pth", half=True, meta={"name": "toy", "v": 1})
    data = load_checkpoint_file(half)
    assert data["meta"] == {"name": "toy", "v": 1}
    assert all(v.dtype == torch.float16 for v in data["model"].values())
    assert half.stat().st_size < 0.6 * full.stat().st_size
    dst = ToyModel(hidden=512)
    load_model_weights(dst, half)
    assert dst.fc1.weight.dtype == torch.float32
    torch.testing.assert_close(dst.fc1.weight, model.fc1.weight, atol=1e-3, rtol=1e-3)


def test_bad_inputs_have_clear_errors(tmp_path: Path) -> None:
    _, _, _, ckpt = _setup(tmp_path)
    with pytest.raises(TypeError, match=r"extra\['cfg'\]\['fn'\].*function"):
        ckpt.save("x", cfg={"fn": len})
    good = ckpt.save("good", iteration=2)
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"trunc\.pth"):
        load_model_weights(ToyModel(), truncated)
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_model_weights(ToyModel(), tmp_path / "nope.pth")
    (tmp_path / "last_checkpoint").write_text("gone.pth\n")
    with pytest.raises(CheckpointError, match=r"last_checkpoint.*gone\.pth"):
        ckpt.resume_or_load()


def test_resume_false_loads_weights_only(tmp_path: Path) -> None:
    src, _, _, ckpt = _setup(tmp_path / "run")
    ckpt.save("model_final", iteration=7)
    model, opt, _, ckpt2 = _setup(tmp_path / "new", seed=3)
    assert ckpt2.resume_or_load(tmp_path / "run" / "model_final.pth", resume=True) == 0
    assert torch.equal(model.fc2.weight, src.fc2.weight) and not opt.state


def test_save_weights_refuses_str_subclasses_in_meta(tmp_path: Path) -> None:
    """torch.__version__ is a str subclass that weights_only loading refuses: saving it must
    fail at once, not leave a file that cannot be read."""
    with pytest.raises(TypeError, match="torch"):
        save_weights(ToyModel(), tmp_path / "w.pth", meta={"torch": torch.__version__})
    assert not (tmp_path / "w.pth").exists()
    save_weights(ToyModel(), tmp_path / "w.pth", meta={"torch": str(torch.__version__)})


def test_partial_load_logs_what_loaded_per_module(tmp_path: Path, caplog) -> None:
    """A non-strict load (matching by name) says per top-level module what it loaded and what
    it did not, so a head that silently starts from scratch is visible."""
    import logging

    sd = ToyModel(hidden=16).state_dict()
    part = {k: v for k, v in sd.items() if not k.startswith("fc2")} | {"head.w": torch.zeros(2)}
    torch.save({"model": part}, tmp_path / "part.pth")
    with caplog.at_level(logging.INFO, logger="instseg.engine.checkpoint"):
        with pytest.warns(UserWarning, match="non-strictly"):
            load_model_weights(ToyModel(hidden=16), tmp_path / "part.pth", strict=False)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "instseg.engine.checkpoint"]
    assert line == (
        f"{tmp_path / 'part.pth'}: loaded: fc1 (2 tensors), norm (2 tensors); "
        "not loaded: fc2 (2 tensors); unused from the file: head (1)"
    )
    caplog.clear()
    torch.save({"model": part | {"fc1.bias": torch.zeros(3)}}, tmp_path / "shape.pth")
    with caplog.at_level(logging.INFO, logger="instseg.engine.checkpoint"):
        with pytest.warns(UserWarning, match="non-strictly"):
            load_model_weights(ToyModel(hidden=16), tmp_path / "shape.pth", strict=False)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "instseg.engine.checkpoint"]
    # fc1.bias (3,) vs (16,): a shape mismatch is "not loaded"
    assert "loaded: fc1 (1 of 2 tensors), norm (2 tensors);" in line
    assert "not loaded: fc1 (1 of 2 tensors), fc2 (2 tensors);" in line
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="instseg.engine.checkpoint"):
        with pytest.warns(UserWarning, match="non-strictly"):
            load_model_weights(ToyModel(hidden=4), tmp_path / "part.pth", strict=False)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "instseg.engine.checkpoint"]
    assert ": loaded: nothing; not loaded: fc1 (2 tensors), norm (2 tensors), fc2" in line


def test_warm_start_of_another_head_logs_that_the_head_did_not_load(tmp_path: Path, caplog):
    """The issue-14 trap: Mask R-CNN weights into a BCNet model load backbone and detector,
    and none of the mask head (the names differ); the log line says so."""
    import logging

    from instseg.models.zoo import build_model

    kw = dict(num_classes=2, pretrained=False)
    save_weights(build_model("effl0_fcos_maskrcnn", **kw), tmp_path / "base.pt")
    bcnet = build_model("effl0_fcos_bcnet", **kw)
    with caplog.at_level(logging.INFO, logger="instseg.engine.checkpoint"):
        with pytest.warns(UserWarning, match="non-strictly"):
            load_model_weights(bcnet, tmp_path / "base.pt", strict=False)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "instseg.engine.checkpoint"]
    keys = list(bcnet.state_dict())
    n = {m: sum(1 for k in keys if k.startswith(m + ".")) for m in ("backbone", "detector")}
    n["mask_head"] = sum(1 for k in keys if k.startswith("mask_head."))
    assert (
        f"loaded: backbone ({n['backbone']} tensors), detector ({n['detector']} tensors);" in line
    )
    assert f"not loaded: mask_head ({n['mask_head']} tensors)" in line
    assert "unused from the file: mask_head (12)" in line  # the 12 Mask R-CNN head tensors


def test_load_only_named_modules_leaves_the_rest_at_init(tmp_path: Path) -> None:
    """``modules=[...]`` loads only those top-level modules: the issue-14 warm start where the
    baseline head loaded its trained tensors and the other heads none cannot happen."""
    trained = ToyModel(hidden=16)
    for p in trained.parameters():
        torch.nn.init.constant_(p, 0.5)
    torch.save({"model": trained.state_dict()}, tmp_path / "w.pth")
    torch.manual_seed(0)
    fresh = ToyModel(hidden=16)
    init_fc2 = {k: v.clone() for k, v in fresh.fc2.state_dict().items()}
    with pytest.warns(UserWarning, match="non-strictly"):
        load_model_weights(fresh, tmp_path / "w.pth", modules=["fc1", "norm"])
    assert torch.equal(fresh.fc1.weight, trained.fc1.weight)
    assert all(torch.equal(fresh.fc2.state_dict()[k], v) for k, v in init_fc2.items())
    with pytest.raises(CheckpointError, match="no module"):
        load_model_weights(ToyModel(hidden=16), tmp_path / "w.pth", modules=["head"])
