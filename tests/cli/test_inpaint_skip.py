"""``instseg inpaint`` on a frame folder with an unreadable frame: it is skipped with one warning
(named in ``inpaint.json``) and the other frames are inpainted; ``--strict`` makes it a one-line
error; no readable frame at all is an error too. Tiny 64x64 clips and the non-learned fallback
(DIS ultrafast + Telea), so each test takes a few seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import instseg.inference.inpainter as inpainter_mod
from instseg.cli.main import main

T, H, W = 5, 64, 64


@pytest.fixture()
def clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """frames/ (JPEG, a texture moving 2 px/frame), visible/ and holes/ masks (PNG); no
    installed VOIN model, so the fallback runs."""
    monkeypatch.setattr(inpainter_mod, "DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (H, W + 2 * T, 3), dtype=np.uint8)
    root = tmp_path / "clip"
    for kind in ("frames", "visible", "holes"):
        (root / kind).mkdir(parents=True)
    for t in range(T):
        name = f"{t:04d}"
        Image.fromarray(big[:, 2 * t : 2 * t + W]).save(root / "frames" / f"{name}.jpg")
        vis = np.zeros((H, W), np.uint8)
        vis[20:44, 16 + t : 40 + t] = 255
        holes = np.zeros((H, W), np.uint8)
        holes[34:44, 16 + t : 40 + t] = 255
        Image.fromarray(vis).save(root / "visible" / f"{name}.png")
        Image.fromarray(holes).save(root / "holes" / f"{name}.png")
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def args(clip: Path, out: Path, *extra: str) -> list[str]:
    return ["inpaint", "--source", str(clip / "frames"), "--visible-masks",
            str(clip / "visible"), "--holes", str(clip / "holes"), "--out", str(out),
            "--no-progress", "--flow-preset", "ultrafast", "--window", "3", "--overlap", "1",
            *extra]  # fmt: skip


def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_truncated_frame_is_skipped_and_the_rest_inpainted(clip, tmp_path, capsys) -> None:  # noqa: ANN001
    truncate(clip / "frames" / "0002.jpg")
    out = tmp_path / "out"
    assert main(args(clip, out)) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning: skipped" in line]
    assert len(warnings) == 1, captured.err
    assert "0002.jpg: cannot read image" in warnings[0]
    assert "1 of 5 frames" in captured.err and "unreadable and skipped" in captured.err
    assert "4 frames" in captured.out
    good = ["0000.png", "0001.png", "0003.png", "0004.png"]
    assert pngs(out / "frames") == good and pngs(out / "amodal") == good
    manifest = json.loads((out / "inpaint.json").read_text())
    assert manifest["frames"] == ["0000", "0001", "0003", "0004"]
    assert manifest["skipped"] == ["0002.jpg"]
    import av

    with av.open(str(out / "video.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 4
    # the good frames are inpainted: pixels outside the holes kept, the holes filled
    frame = np.asarray(Image.open(out / "frames" / "0003.png")).astype(int)
    src = np.asarray(Image.open(clip / "frames" / "0003.jpg")).astype(int)
    hole = np.asarray(Image.open(clip / "holes" / "0003.png")) > 0
    np.testing.assert_array_equal(frame[~hole], src[~hole])
    assert (frame[hole] != src[hole]).any()


def test_strict_makes_the_bad_frame_a_one_line_error(clip, tmp_path, capsys) -> None:  # noqa: ANN001
    truncate(clip / "frames" / "0002.jpg")
    out = tmp_path / "out"
    assert main(args(clip, out, "--strict")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    err = [line for line in err if "no learned VOIN model" not in line]  # the fallback notice
    assert len(err) == 1 and err[0].startswith("instseg inpaint")
    assert "0002.jpg: cannot read image" in err[0]
    assert not out.exists()  # nothing written


def test_unreadable_mask_skips_its_frame(clip, tmp_path, capsys) -> None:  # noqa: ANN001
    (clip / "holes" / "0001.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(args(clip, out)) == 0
    err = capsys.readouterr().err
    assert "skipped frame 0001" in err and "0001.png: cannot read mask" in err
    assert pngs(out / "frames") == ["0000.png", "0002.png", "0003.png", "0004.png"]
    assert json.loads((out / "inpaint.json").read_text())["skipped"] == ["0001.jpg"]
    assert main(args(clip, tmp_path / "out2", "--strict")) == 2
    assert "0001.png: cannot read mask" in capsys.readouterr().err


def test_no_readable_frame_is_an_error(clip, tmp_path, capsys) -> None:  # noqa: ANN001
    for f in (clip / "frames").iterdir():
        truncate(f)
    assert main(args(clip, tmp_path / "out")) == 2
    err = capsys.readouterr().err.splitlines()
    assert sum("warning: skipped" in line for line in err) == T
    assert err[-1].startswith("instseg inpaint") and "no readable frames" in err[-1]
    assert "5 of 5" in err[-1]
