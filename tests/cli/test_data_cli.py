"""``instseg data``: the synth and coco-occ subcommands, run in-process."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import cv2
import pytest

from instseg.cli.main import main


def test_synth_writes_images_and_annotations(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "synth"
    rc = main(
        [
            "data",
            "synth",
            "--out",
            str(out),
            "--num",
            "3",
            "--seed",
            "1000",
            "--size",
            "48x80",
            "--occlusion",
            "0.7",
            "--min-objects",
            "2",
            "--max-objects",
            "3",
            "--cutouts",
            "none",
        ]
    )
    assert rc == 0
    assert "wrote 3 images" in capsys.readouterr().out
    data = json.loads((out / "annotations.json").read_text())
    assert [im["file_name"] for im in data["images"]] == [f"images/{i:06d}.png" for i in (1, 2, 3)]
    assert all((im["height"], im["width"]) == (48, 80) for im in data["images"])
    assert cv2.imread(str(out / "images/000002.png")).shape == (48, 80, 3)
    assert data["info"]["seed"] == 1000 and data["info"]["config"]["occlusion"] == 0.7
    assert all(c["kind"] == "shape" for c in data["categories"])
    anns = data["annotations"]
    per_image = [sum(a["image_id"] == im["id"] for a in anns) for im in data["images"]]
    assert max(per_image) <= 3


def test_synth_square_size_and_jpg(tmp_path: Path) -> None:
    rc = main(
        [
            "data",
            "synth",
            "--out",
            str(tmp_path),
            "--num",
            "1",
            "--size",
            "40",
            "--format",
            "jpg",
            "--cutouts",
            "none",
        ]
    )
    assert rc == 0
    assert cv2.imread(str(tmp_path / "images/000001.jpg")).shape == (40, 40, 3)


def test_synth_bad_input_exits_with_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "no-such-folder"
    argv = ["data", "synth", "--out", str(tmp_path), "--num", "1", "--cutouts", str(missing)]
    assert main(argv) == 2
    assert "no-such-folder" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(tmp_path),
                "--num",
                "1",
                "--occlusion",
                "2",
                "--cutouts",
                "none",
            ]
        )
        == 2
    )
    assert "occlusion" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(tmp_path), "--num", "1", "--size", "0x5"])
    assert not (tmp_path / "annotations.json").exists()


def test_coco_occ_calls_extractor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls = []

    def fake_extract(gt_json: Path, out_json: Path, *, min_overlap: float) -> dict:
        calls.append((gt_json, out_json, min_overlap))
        return {"images": 7, "annotations": 11}

    module = types.ModuleType("instseg.data.occlusion")
    module.extract_coco_occ = fake_extract  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "instseg.data.occlusion", module)
    gt, out = tmp_path / "gt.json", tmp_path / "occ.json"
    argv = ["data", "coco-occ", "--gt", str(gt), "--out", str(out), "--min-overlap", "0.3"]
    assert main(argv) == 0
    assert calls == [(gt, out, 0.3)]
    assert json.loads(capsys.readouterr().out) == {"images": 7, "annotations": 11}


def test_coco_occ_on_synthetic_scenes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("instseg.data.occlusion")
    synth = tmp_path / "synth"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(synth),
                "--num",
                "6",
                "--size",
                "64",
                "--occlusion",
                "1",
                "--cutouts",
                "none",
            ]
        )
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "occ.json"
    argv = ["data", "coco-occ", "--gt", str(synth / "annotations.json"), "--out", str(out)]
    assert main(argv) == 0
    stats = json.loads(capsys.readouterr().out)
    kept = json.loads(out.read_text())
    assert stats["num_images_in"] == 6 and stats["num_images_out"] == len(kept["images"]) > 0
    assert kept["categories"] == json.loads((synth / "annotations.json").read_text())["categories"]


def test_unknown_subcommand_fails() -> None:
    with pytest.raises(SystemExit):
        main(["data", "nope"])


def test_synth_video_writes_frames_and_tracks(tmp_path: Path) -> None:
    argv = [
        "data",
        "synth-video",
        "--out",
        str(tmp_path),
        "--num",
        "2",
        "--frames",
        "3",
        "--size",
        "48",
        "--cutouts",
        "none",
    ]
    assert main(argv) == 0
    data = json.loads((tmp_path / "annotations.json").read_text())
    assert [v["length"] for v in data["videos"]] == [3, 3]
    assert all((tmp_path / f).is_file() for v in data["videos"] for f in v["file_names"])
    assert all(len(a["segmentations"]) == 3 for a in data["annotations"])


def test_synth_video_effect_flags_record_corrupted_frames(tmp_path: Path) -> None:
    argv = ["data", "synth-video", "--out", str(tmp_path), "--num", "2", "--frames", "6",
            "--size", "48", "--cutouts", "none", "--corrupt-prob", "0.5", "--corruptions",
            "dark", "--patch-prob", "0.5", "--camera-speed", "0.02",
            "--scale-drift", "0.2"]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "annotations.json").read_text())
    fx = data["info"]["config"]["effects"]
    assert fx["corrupt_prob"] == 0.5 and fx["corruptions"] == ["dark"]
    assert fx["camera_speed"] == 0.02 and fx["scale_drift"] == 0.2
    for v in data["videos"]:
        assert set(v["corruptions"]) <= {None, "dark"} and len(v["corruptions"]) == 6
        assert set(v["corrupted_frames"]) >= {t for t, c in enumerate(v["corruptions"]) if c}
    assert any(v["corrupted_frames"] for v in data["videos"])


def _davis_all() -> bool:
    from instseg.data.synthetic_cutouts import find_davis_roots

    return len(find_davis_roots()) == 2


@pytest.mark.skipif(not _davis_all(), reason="the two shared DAVIS-2016 folders not found")
def test_synth_objects_from_chosen_sequences(tmp_path: Path) -> None:
    out = tmp_path / "objects"
    rc = main(["data", "synth", "--out", str(out), "--num", "2", "--size", "64",
               "--cutouts", "all", "--sequences", "boat", "bear", "--frames-per-sequence", "2",
               "--class-agnostic", "--jitter", "--cutout-prob", "1"])  # fmt: skip
    assert rc == 0
    data = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["object"]
    assert data["info"]["cutout_sequences"] == ["bear", "boat"]  # one from each shared folder
    assert data["info"]["config"]["jitter"] is not None


def test_synth_sequences_without_cutouts_is_an_error(tmp_path: Path, capsys) -> None:
    rc = main(["data", "synth", "--out", str(tmp_path / "x"), "--num", "1", "--cutouts", "none",
               "--sequences", "boat"])  # fmt: skip
    assert rc == 2 and "--sequences" in capsys.readouterr().err
