"""``instseg train CONFIG``: the config's ``task`` picks the recipe (image, video, propagation
or inpainting), a ``task=`` override wins, and an unknown task is one clean error. The
propagation and VOIN configs train tiny runs that write loadable weights and resume exactly."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from instseg.cli.main import main
from instseg.cli.train import TASKS, config_task
from instseg.engine.weights import read_weights_file
from instseg.recipes.inpainting_config import TINY_OVERRIDES as VOIN_TINY
from instseg.recipes.propagation_config import TINY_OVERRIDES as PROPAGATION_TINY
from instseg.recipes.video_config import SMOKE_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "davis2016-train-subset"
VIDEO_SMOKE = [*SMOKE_OVERRIDES, "threads=1", "device=cpu"]


def test_task_of_configs(tmp_path):
    assert config_task(ROOT / "configs" / "pcan_synthetic.yaml", []) == "video"
    assert config_task(ROOT / "src" / "instseg" / "configs" / "demo.yaml", []) == "image"
    assert config_task(ROOT / "configs" / "propagation_davis.yaml", []) == "propagation"
    assert config_task(ROOT / "configs" / "voin_davis.yaml", []) == "inpainting"
    assert TASKS == ("image", "video", "propagation", "inpainting")
    base = tmp_path / "base.yaml"
    base.write_text("task: video\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\nseed: 3\n")
    assert config_task(child, []) == "video"  # inherited from the base
    assert config_task(child, ["task=image"]) == "image"
    expected = "task must be one of image, video, propagation, inpainting, got 'sound'"
    with pytest.raises(Exception, match=expected):
        config_task(child, ["task=sound"])


def test_train_dispatches_a_video_config_to_the_pcan_recipe(tmp_path, capsys):
    out = tmp_path / "pcan"
    cfg = str(ROOT / "configs" / "pcan_synthetic.yaml")
    assert main(["train", cfg, *VIDEO_SMOKE, f"out_dir={out}", "--no-progress"]) == 0
    meta_line = (out / "config.yaml").read_text().splitlines()
    assert meta_line[0].startswith("# precision:") and "task: video" in meta_line
    assert (out / "model.pt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert "AP" in metrics  # YouTube-VIS AP of the held-out synthetic video
    assert "AP" in capsys.readouterr().out


def test_unknown_task_is_a_clean_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: sound\n")
    assert main(["train", str(cfg)]) == 2  # one line on stderr, exit status 2
    err = capsys.readouterr().err
    assert re.search(r"config error: .*c\.yaml: task must be one of", err)
    assert len(err.splitlines()) == 1


def _needs_davis() -> None:
    if not (SHARED / "JPEGImages").is_dir():
        pytest.skip(f"DAVIS subset not found at {SHARED}")


def _interrupt_at(folder: Path, checkpoint: str, *also_remove: Path) -> None:
    """Make ``folder`` look like a run that died after writing ``checkpoint``."""
    (folder / "last_checkpoint").write_text(checkpoint + "\n")
    (folder / "model_final.pth").unlink()
    for path in also_remove:
        path.unlink()


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = read_weights_file(a)[0], read_weights_file(b)[0]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_propagation_config_tiny_run_and_exact_resume(tmp_path, capsys):
    _needs_davis()
    out = tmp_path / "prop"
    cfg = str(ROOT / "configs" / "propagation_davis.yaml")
    args = [*PROPAGATION_TINY, f"data.root={SHARED}", "solver.iters=4", "checkpoint_period=2"]
    args.append("log_period=1")
    assert main(["train", cfg, *args, f"out_dir={out}", "--no-progress"]) == 0
    assert "loss_first50" in json.loads(capsys.readouterr().out)
    state, meta = read_weights_file(out / "model.pt", task="propagation")
    assert meta.model == {"channels": 152, "hidden": 256} and meta.training["iters"] == 4
    assert state["g.0.weight"].dtype == torch.float16  # the fp16 release format
    from instseg.inference.mask_propagation import BackboneFeatures

    assert BackboneFeatures(weights=out / "model.pt", pretrained=False).source == "embedding"
    # a run that died after iteration 2 resumes to the same weights, bit for bit
    again = tmp_path / "again"
    shutil.copytree(out, again)
    _interrupt_at(again, "model_0000002.pth", again / "model.pt")
    assert main(["train", cfg, *args, f"out_dir={again}", "--no-progress", "--resume"]) == 0
    assert _same_weights(out / "model.pt", again / "model.pt")
    records = [json.loads(x) for x in (again / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3, 4]


def test_train_voin_config_tiny_run_and_exact_resume(tmp_path, capsys):
    _needs_davis()
    out = tmp_path / "voin"
    cfg = str(ROOT / "configs" / "voin_davis.yaml")
    args = [*VOIN_TINY, f"data.root={SHARED}", "checkpoint_period=1"]
    assert main(["train", cfg, *args, f"out_dir={out}", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out) == {"weights": str(out / "voin.pt")}
    _, meta = read_weights_file(out / "voin.pt", task="voin")
    assert meta.model == {
        "variant": "small", "canvas_size": 32, "format": "instseg-voin-1",
        "stage_sizes": {"shape": 48, "flow": 48, "generator": 48},  # each stage's frame height
    }  # fmt: skip
    assert meta.training["iterations"] == {"shape": 2, "flow": 2, "generator": 2}
    assert meta.trained
    from instseg.inference.inpainter import load_voin_weights

    nets, _ = load_voin_weights(out / "voin.pt")  # what `instseg inpaint --weights` loads
    assert nets.generator is not None
    # the shape and generator stages died after iteration 1: --resume redoes the rest exactly
    again = tmp_path / "again"
    shutil.copytree(out, again)
    for stage in ("shape", "generator"):
        _interrupt_at(again / stage, "model_0000001.pth")
    (again / "voin.pt").unlink()
    assert main(["train", cfg, *args, f"out_dir={again}", "--no-progress", "--resume"]) == 0
    assert _same_weights(out / "voin.pt", again / "voin.pt")
