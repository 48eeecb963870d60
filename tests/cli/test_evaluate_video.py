"""The vis / mots / davis sub-commands of `instseg evaluate` (instseg.cli.evaluate_video)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from instseg.cli.evaluate_video import SUBCOMMANDS
from instseg.data.davis import write_davis_label
from instseg.data.mots import MOTSObject, write_mots_txt
from instseg.structures import mask_to_rle


def _run(name: str, argv: list[str]) -> int:
    add, run = SUBCOMMANDS[name]
    parser = argparse.ArgumentParser()
    add(parser)
    return run(parser.parse_args(argv))


def test_vis_davis_mots_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = np.zeros((6, 8), bool)
    m[1:4, 2:6] = True
    segs = [mask_to_rle(m), None]
    gt = {"videos": [{"id": 1, "width": 8, "height": 6, "file_names": ["v/0.jpg", "v/1.jpg"]}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": segs}],
          "categories": [{"id": 1, "name": "a"}]}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(
        json.dumps([{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": segs}])
    )
    assert (
        _run(
            "vis",
            [
                "--gt",
                str(tmp_path / "gt.json"),
                "--results",
                str(tmp_path / "res.json"),
                "--out",
                str(tmp_path / "m.json"),
            ],
        )
        == 0
    )
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["AP"] == pytest.approx(100.0) and metrics["APm"] is None  # NaN -> null
    assert "AP50" in capsys.readouterr().out

    lab = m.astype(np.uint8)
    for t in range(3):
        write_davis_label(tmp_path / "ann" / "s" / f"{t:05d}.png", lab)
    assert (
        _run(
            "davis",
            [
                "--results",
                str(tmp_path / "ann"),
                "--gt",
                str(tmp_path / "ann"),
                "--out",
                str(tmp_path / "d.json"),
            ],
        )
        == 0
    )
    assert json.loads((tmp_path / "d.json").read_text())["J&F-Mean"] == pytest.approx(100.0)

    objs = [MOTSObject(t, 2001, 2, mask_to_rle(m)) for t in range(3)]
    write_mots_txt(tmp_path / "mots" / "0000.txt", objs)
    assert (
        _run(
            "mots",
            [
                "--gt",
                str(tmp_path / "mots"),
                "--results",
                str(tmp_path / "mots"),
                "--classes",
                "pedestrian",
                "--out",
                str(tmp_path / "t.json"),
            ],
        )
        == 0
    )
    out = json.loads((tmp_path / "t.json").read_text())
    assert out["pedestrian"]["HOTA"] == pytest.approx(100.0)
    assert "pedestrian/sMOTSA" in capsys.readouterr().out
