"""What a user sees when they get something wrong: one line naming the file and the problem on
stderr and exit status 2, for every command; ``--debug`` / ``INSTSEG_DEBUG=1`` show the
traceback instead. And predict on a folder with a truncated JPEG: the good images are done."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instseg.cli.main import main
from instseg.utils.errors import MissingFileError, UserError

ROOT = Path(__file__).resolve().parents[2]


def write_images(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i + 1}.jpg"
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    """The bad inputs: an untrusted pickle, a broken YAML and JSON, an empty video, ..."""
    f = {"dir": tmp_path}
    f["evil"] = tmp_path / "evil.pt"
    torch.save(argparse.Namespace(a=1), f["evil"])  # needs full unpickling: refused
    f["yaml"] = tmp_path / "broken.yaml"
    f["yaml"].write_text("solver:\n  lr: [0.1\n")
    f["json"] = tmp_path / "gt.json"
    f["json"].write_text('{"images": [')
    f["video"] = tmp_path / "empty.mp4"
    f["video"].write_bytes(b"")
    f["img"] = write_images(tmp_path / "imgs", 1)[0]
    return f


# command -> (argv from the files, text the one line must contain)
CASES = {
    "demo": (lambda f: ["demo", "--out", str(f["dir"] / "d"), "solver.nope=1"],
             "override 'solver.nope=1': unknown key"),
    "train": (lambda f: ["train", str(f["dir"] / "missing.yaml")],
              "missing.yaml: config file not found"),
    "eval": (lambda f: ["eval", str(f["yaml"]), "--weights", str(f["evil"])],
             "broken.yaml: invalid YAML"),
    "predict": (lambda f: ["predict", "--source", str(f["dir"] / "nothing"), "--weights",
                           str(f["evil"])], "nothing: no such file, folder or glob match"),
    "predict-untrusted": (lambda f: ["predict", "--weights", str(f["evil"]), "--source",
                                     str(f["img"]), "--out", str(f["dir"] / "o")],
                          "evil.pt: refused to load"),
    "export": (lambda f: ["export", "--weights", str(f["evil"]), "--format", "onnx"],
               "evil.pt: refused to load"),
    "evaluate": (lambda f: ["evaluate", "coco", "--gt", str(f["json"]), "--results",
                            str(f["json"])], "gt.json: invalid JSON"),
    "data": (lambda f: ["data", "few-shot", "--gt", str(f["dir"] / "no.json"), "--k", "1",
                        "--out", str(f["dir"] / "o.json")], "no.json: file not found"),
    "track": (lambda f: ["track", "--source", str(f["video"]), "--out", str(f["dir"] / "t")],
              "empty.mp4: cannot open video"),
    "propagate": (lambda f: ["propagate", "--source", str(f["img"].parent), "--init-masks",
                             str(f["dir"] / "masks"), "--out", str(f["dir"] / "p")],
                  "masks"),
    "inpaint": (lambda f: ["inpaint", "--source", str(f["img"].parent), "--visible-masks",
                           str(f["dir"] / "vis"), "--holes", str(f["dir"] / "vis"), "--out",
                           str(f["dir"] / "i"), "--no-progress"], "vis: visible mask folder"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_error_is_one_line_and_status_2(case, files, capsys) -> None:  # noqa: ANN001
    argv_of, expected = CASES[case]
    argv = argv_of(files)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"instseg {argv[0]}"), err
    assert expected in lines[0], err
    assert "Traceback" not in err


def test_unknown_option_value_is_one_line(capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as e:
        main(["predict", "--source", "x", "--amp", "fp64"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "instseg predict: error: argument --amp: invalid choice" in err[0]
    with pytest.raises(SystemExit):
        main(["predict", "--source", "x", "--conf", "25"])
    assert "--conf" in capsys.readouterr().err


def test_unknown_class_is_one_line(tiny_weights, files, capsys) -> None:  # noqa: ANN001
    argv = ["predict", "--weights", str(tiny_weights), "--source", str(files["img"]),
            "--out", str(files["dir"] / "o"), "--classes", "dog"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown class 'dog'" in err[0] and "1=object, 7=thing" in err[0]


def test_debug_shows_the_traceback(files, monkeypatch) -> None:  # noqa: ANN001
    argv = ["predict", "--source", str(files["dir"] / "nothing")]
    with pytest.raises(MissingFileError, match="nothing"):
        main(["--debug", *argv])
    with pytest.raises(MissingFileError):
        main([*argv, "--debug"])  # anywhere on the line
    monkeypatch.setenv("INSTSEG_DEBUG", "1")
    with pytest.raises(UserError):
        main(argv)


def test_inpaint_says_error_and_debug_shows_the_traceback(files, capsys) -> None:  # noqa: ANN001
    argv = CASES["inpaint"][0](files)
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("instseg inpaint: error: ")
    with pytest.raises((OSError, ValueError), match="vis"):
        main(["--debug", *argv])


def test_console_script_exit_status_and_traceback(files) -> None:  # noqa: ANN001
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "INSTSEG_DEBUG": ""}
    cmd = [sys.executable, "-m", "instseg.cli.main", "predict", "--source", str(files["evil"]),
           "--weights", str(files["evil"])]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "evil.pt" in r.stderr
    r = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True, env=env,
                       timeout=300)  # fmt: skip
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr
    assert "UntrustedCheckpointError" in r.stderr


def test_predict_skips_a_truncated_jpeg_and_keeps_the_rest(tiny_weights, tmp_path, capsys) -> None:  # noqa: ANN001, E501
    paths = write_images(tmp_path / "imgs", 3)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    base = ["predict", "--weights", str(tiny_weights), "--source", str(tmp_path / "imgs"),
            "--out", str(out), "--conf", "0", "--save-vis"]  # fmt: skip
    assert main(base) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "2.jpg: cannot read image" in warnings[0]
    assert "1 of 3 items" in err and "skipped" in err
    res = json.loads((out / "results.json").read_text())
    assert res and {r["image_id"] for r in res} == {1, 3}
    assert sorted(p.name for p in (out / "vis").iterdir()) == ["1.jpg", "3.jpg"]
    # --strict: the bad image is fatal (one line), the previous results.json is untouched
    assert main([*base, "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2.jpg: cannot read image" in err[0]
    assert json.loads((out / "results.json").read_text()) == res


def test_predict_conf_max_det_classes(tiny_weights, tmp_path) -> None:  # noqa: ANN001
    write_images(tmp_path / "imgs", 2)

    def results(*extra: str) -> list[dict]:
        out = tmp_path / f"out{len(extra)}"
        argv = ["predict", "--weights", str(tiny_weights), "--source", str(tmp_path / "imgs"),
                "--out", str(out), *extra]  # fmt: skip
        assert main(argv) == 0
        return json.loads((out / "results.json").read_text())

    everything = results("--conf", "0", "--max-det", "1000")
    assert len(everything) > 6, "the random model should give many low-scoring detections"
    capped = results("--conf", "0", "--max-det", "3")
    assert all(sum(r["image_id"] == i for r in capped) <= 3 for i in (1, 2))
    top = sorted((r["score"] for r in everything if r["image_id"] == 1), reverse=True)[:3]
    assert sorted((r["score"] for r in capped if r["image_id"] == 1), reverse=True) == top
    things = results("--conf", "0", "--max-det", "1000", "--classes", "thing")
    assert things and {r["category_id"] for r in things} == {7}
    assert len(things) == sum(r["category_id"] == 7 for r in everything)
    median = float(np.median([r["score"] for r in everything]))
    confident = results("--conf", f"{median:.6f}", "--max-det", "1000", "--classes", "1,7")
    assert all(r["score"] >= round(median, 6) - 1e-6 for r in confident)
    assert 0 < len(confident) < len(everything)
