"""``instseg inpaint`` on 4 real DAVIS frames (occluded with video_occlusion) with a tiny
random-initialised weights file and with the no-weights fallback."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import instseg.inference.inpainter as inpainter_mod
from instseg.cli.main import main
from instseg.data.video_occlusion import load_davis_sequence, occlude_clip, synthetic_occluder
from instseg.inference.inpainter import save_voin_weights
from instseg.models.inpainting.voin import VOIN_VARIANTS

DAVIS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "davis2016-train-subset"
H, W = 480, 854


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """frames/ (4 corrupted DAVIS 'boat' frames, PNG), visible/, holes/, occluder/ masks."""
    if not (DAVIS / "JPEGImages" / "480p" / "boat").is_dir():
        pytest.skip(f"DAVIS subset not found at {DAVIS}")
    frames, masks, paths = load_davis_sequence(DAVIS, "boat", num_frames=4)
    rng = np.random.default_rng(0)
    clip = occlude_clip(frames, masks, synthetic_occluder(rng), rng=rng, occlusion_ratio=0.3)
    assert clip.holes.any((1, 2)).all()
    root = tmp_path_factory.mktemp("davis_clip")
    arrays = {
        "frames": clip.frames,
        "visible": clip.visible,
        "holes": clip.holes,
        "occluder": clip.occluder,
    }
    for kind, arr in arrays.items():
        (root / kind).mkdir()
        for p, a in zip(paths, arr, strict=True):
            img = a if a.dtype == np.uint8 else a.astype(np.uint8) * 255
            Image.fromarray(img).save(root / kind / f"{p.stem}.png")
    return root


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    nets = VOIN_VARIANTS["small"](num_classes=1)
    path = tmp_path_factory.mktemp("voin_w") / "voin_tiny.pt"
    return save_voin_weights(
        nets, path, variant="small", num_classes=1, canvas_size=32, trained=False
    )


def _args(clip: Path, out: Path, *extra: str) -> list[str]:
    return [
        "inpaint",
        "--source",
        str(clip / "frames"),
        "--visible-masks",
        str(clip / "visible"),
        "--out",
        str(out),
        "--no-progress",
        "--flow-preset",
        "ultrafast",
        *extra,
    ]


def _check_outputs(clip: Path, out: Path) -> dict[str, np.ndarray]:
    stems = sorted(p.stem for p in (clip / "frames").glob("*.png"))
    got = {}
    for s in stems:
        f = np.asarray(Image.open(out / "frames" / f"{s}.png"))
        a = np.asarray(Image.open(out / "amodal" / f"{s}.png"))
        assert f.shape == (H, W, 3) and f.dtype == np.uint8
        assert a.shape == (H, W) and set(np.unique(a)) <= {0, 255}
        got[s] = f
    with av.open(str(out / "video.mp4")) as c:
        vframes = [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
    assert len(vframes) == len(stems) and vframes[0].shape == (H, W, 3)
    return got


def _read(folder: Path, stem: str) -> np.ndarray:
    return np.asarray(Image.open(folder / f"{stem}.png"))


def test_inpaint_with_weights_fills_only_holes(clip_dir, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        _args(
            clip_dir,
            out,
            "--holes",
            str(clip_dir / "holes"),
            "--weights",
            str(tiny_weights),
            "--window",
            "3",
            "--overlap",
            "1",
        )
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "marked untrained" in captured.err
    got = _check_outputs(clip_dir, out)
    for stem, frame in got.items():
        inp, hole = _read(clip_dir / "frames", stem), _read(clip_dir / "holes", stem) > 0
        np.testing.assert_array_equal(frame[~hole], inp[~hole])  # known pixels untouched
        assert (frame[hole] != inp[hole]).any()  # the occluder pixels were replaced
        amodal = _read(out / "amodal", stem) > 0
        np.testing.assert_array_equal(amodal, hole | (_read(clip_dir / "visible", stem) > 0))


def test_inpaint_predicts_region_without_holes(clip_dir, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        _args(
            clip_dir,
            out,
            "--weights",
            str(tiny_weights),
            "--occluder-masks",
            str(clip_dir / "occluder"),
        )
    )
    assert rc == 0, capsys.readouterr().err
    for stem in _check_outputs(clip_dir, out):
        amodal = _read(out / "amodal", stem) > 0
        vis, occ = _read(clip_dir / "visible", stem) > 0, _read(clip_dir / "occluder", stem) > 0
        assert (amodal >= vis).all() and not (amodal & ~vis & ~occ).any()


def test_inpaint_fallback_without_weights(clip_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inpainter_mod, "DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    out = tmp_path / "out"
    rc = main(_args(clip_dir, out, "--holes", str(clip_dir / "holes")))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "no learned VOIN model is installed" in captured.err
    assert "generated 0.0%" in captured.out  # never a generator in the fallback
    got = _check_outputs(clip_dir, out)
    for stem, frame in got.items():
        inp, hole = _read(clip_dir / "frames", stem), _read(clip_dir / "holes", stem) > 0
        np.testing.assert_array_equal(frame[~hole], inp[~hole])
        assert (frame[hole] != inp[hole]).any()
    # without holes / occluders / a shape network the region cannot be predicted: clear error
    rc = main(_args(clip_dir, tmp_path / "out2"))
    assert rc == 2 and "pass --holes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, zero", [("--no-flow", "propagated"), ("--no-generator", "generated")]
)
def test_switches(clip_dir, tiny_weights, tmp_path, capsys, flag, zero):
    rc = main(
        _args(
            clip_dir,
            tmp_path / "out",
            "--holes",
            str(clip_dir / "holes"),
            "--weights",
            str(tiny_weights),
            flag,
        )
    )
    text = capsys.readouterr().out
    assert rc == 0
    line = next(x for x in text.splitlines() if "hole pixels" in x)
    assert f"{zero} 0.0%" in line
    if flag == "--no-flow":
        assert "generated 100.0%" in line
    else:  # propagation fills some, Telea the rest
        assert "Telea 0.0%" not in line and "propagated 0.0%" not in line


def test_missing_mask_is_a_clear_error(clip_dir, tmp_path, capsys):
    vis = tmp_path / "visible"
    vis.mkdir()
    stems = sorted(p.stem for p in (clip_dir / "frames").glob("*.png"))
    for s in stems[:-1]:
        (vis / f"{s}.png").write_bytes((clip_dir / "visible" / f"{s}.png").read_bytes())
    args = _args(clip_dir, tmp_path / "out", "--holes", str(clip_dir / "holes"))
    args[args.index("--visible-masks") + 1] = str(vis)
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{vis / (stems[-1] + '.png')}: visible mask missing for frame '{stems[-1]}'" in err


def test_flow_net_and_range_flags(clip_dir, tiny_weights, tmp_path, capsys):
    base = ["--holes", str(clip_dir / "holes"), "--weights", str(tiny_weights)]
    rc = main(_args(clip_dir, tmp_path / "a", *base, "--no-flow-net", "--propagation-range", "2"))
    text = capsys.readouterr().out
    assert rc == 0 and "flow net off, propagation +-2 frames" in text
    rc = main(_args(clip_dir, tmp_path / "b", *base, "--generator-max-side", "32"))
    text = capsys.readouterr().out
    assert rc == 0 and "flow net on, propagation whole clip" in text and "<= 32 px" in text
    rc = main(_args(clip_dir, tmp_path / "c", *base, "--propagation-range", "0"))
    assert rc == 2 and "propagation_range must be >= 1" in capsys.readouterr().err


def test_stage_defaults_come_from_the_weights_file(clip_dir, tmp_path, capsys):
    """A file that recommends its flow net and generator off (as the shipped voin_default.pt
    does) runs without them by default and says how to turn them on; --flow-net / --generator
    (BooleanOptionalAction) override the file."""
    torch.manual_seed(0)
    path = save_voin_weights(
        VOIN_VARIANTS["small"](num_classes=1),
        tmp_path / "rec.pt",
        variant="small",
        num_classes=1,
        canvas_size=32,
        trained=False,
        defaults={"use_flow_net": False, "use_generator": False},
    )
    base = ["--holes", str(clip_dir / "holes"), "--weights", str(path)]
    rc = main(_args(clip_dir, tmp_path / "a", *base))
    text = capsys.readouterr().out
    assert (
        rc == 0
        and "flow net off" in text
        and "generator off (Telea from the object's pixels)" in text
    )
    assert "flow net and generator as the weights file recommends" in text
    assert "run with --flow-net --generator" in text
    line = next(x for x in text.splitlines() if "hole pixels" in x)
    assert "generated 0.0%" in line and "Telea 0.0%" not in line
    rc = main(_args(clip_dir, tmp_path / "b", *base, "--flow-net", "--generator"))
    text = capsys.readouterr().out
    assert rc == 0 and "flow net on" in text and "generator on" in text
    assert "recommends" not in text
    line = next(x for x in text.splitlines() if "hole pixels" in x)
    assert "Telea 0.0%" in line and "generated 0.0%" not in line
