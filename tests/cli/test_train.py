"""``instseg train CONFIG``: the config's ``task`` picks the recipe (image or video), a
``task=`` override wins, and an unknown task is one clean error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from instseg.cli.main import main
from instseg.cli.train import config_task
from instseg.recipes.video_config import SMOKE_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]
VIDEO_SMOKE = [*SMOKE_OVERRIDES, "threads=1", "device=cpu"]


def test_task_of_configs(tmp_path):
    assert config_task(ROOT / "configs" / "pcan_synthetic.yaml", []) == "video"
    assert config_task(ROOT / "src" / "instseg" / "configs" / "demo.yaml", []) == "image"
    base = tmp_path / "base.yaml"
    base.write_text("task: video\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\nseed: 3\n")
    assert config_task(child, []) == "video"  # inherited from the base
    assert config_task(child, ["task=image"]) == "image"
    with pytest.raises(Exception, match="task must be one of image, video, got 'sound'"):
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
