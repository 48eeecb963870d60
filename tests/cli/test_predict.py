import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from instseg.cli.main import main

from .conftest import SHARED


def test_predict_folder_writes_coco_results_and_overlays(tiny_weights, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in (3, 12):
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(src / f"{i}.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--weights",
                str(tiny_weights),
                "--source",
                str(src),
                "--out",
                str(out),
                "--save-vis",
                "--score-thresh",
                "0",
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res and {r["image_id"] for r in res} <= {3, 12}
    assert {r["category_id"] for r in res} <= {1, 7}
    assert all(r["segmentation"]["size"] == [70, 90] for r in res)
    assert sorted(p.name for p in (out / "vis").iterdir()) == ["12.jpg", "3.jpg"]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_predict_real_coco_images_results_load_in_pycocotools(tiny_weights, tmp_path):
    gt = SHARED / "annotations_json" / "davis2016_train_subset_coco.json"
    frames = tmp_path / "frames"
    for seq in ("boat", "bus"):  # same frame names in two sequences: ids must stay apart
        (frames / seq).mkdir(parents=True)
        shutil.copy(SHARED / "JPEGImages/480p" / seq / "00000.jpg", frames / seq / "00000.jpg")
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            "--weights",
            str(tiny_weights),
            "--source",
            f"{frames}/*/*.jpg",
            "--gt",
            str(gt),
            "--out",
            str(out),
            "--score-thresh",
            "0",
        ]
    )
    assert rc == 0
    coco = COCO(str(gt))
    by_name = {im["file_name"]: im["id"] for im in coco.dataset["images"]}
    res = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in res} == {by_name["boat/00000.jpg"], by_name["bus/00000.jpg"]}
    dt = coco.loadRes(str(out / "results.json"))
    assert len(dt.getAnnIds()) == len(res)
    assert all(r["segmentation"]["size"] == [480, 854] for r in res)


def test_predict_video_writes_mp4(tiny_weights, tmp_path):
    from instseg.utils.video_writer import write_video

    frames = [np.full((64, 80, 3), 40 * i, np.uint8) for i in range(4)]
    video = write_video(tmp_path / "v.mp4", frames, fps=8)
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--weights",
                str(tiny_weights),
                "--source",
                str(video),
                "--out",
                str(out),
                "--save-vis",
            ]
        )
        == 0
    )
    assert (out / "vis.mp4").stat().st_size > 0
    assert (out / "results.json").is_file()


def test_predict_model_takes_a_shipped_name_or_a_path(tiny_weights, tmp_path, monkeypatch, capsys):
    from instseg.engine import weights as weights_mod

    src = tmp_path / "imgs"
    src.mkdir()
    Image.fromarray(np.zeros((70, 90, 3), np.uint8)).save(src / "1.png")
    # a path: the same as --weights
    out = tmp_path / "by_path"
    argv = ["predict", "--source", str(src), "--conf", "0", "--backend", "torch"]
    assert main([*argv, "--model", str(tiny_weights), "--out", str(out)]) == 0
    assert (out / "results.json").is_file()
    # a shipped name resolves through SHIPPED_IMAGE_MODELS
    monkeypatch.setitem(weights_mod.SHIPPED_IMAGE_MODELS, "bcnet", tiny_weights)
    out = tmp_path / "by_name"
    assert main([*argv, "--model", "bcnet", "--out", str(out)]) == 0
    assert (out / "results.json").is_file()
    # a missing shipped file, an unknown name, and both options: one-line errors naming them
    monkeypatch.setitem(weights_mod.SHIPPED_IMAGE_MODELS, "bcnet", tmp_path / "gone.pt")
    assert main([*argv, "--model", "bcnet"]) == 2
    assert "shipped model 'bcnet' not found" in capsys.readouterr().err
    assert main([*argv, "--model", "nosuch"]) == 2
    assert "not a shipped model name" in capsys.readouterr().err
    assert main([*argv, "--model", "objects", "--weights", str(tiny_weights)]) == 2
    assert "not both" in capsys.readouterr().err
