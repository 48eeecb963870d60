"""The shipped default VOIN (src/instseg/weights/voin_default.pt, see its model card): a small,
safe fp16 file, and on a held-out real DAVIS clip with a pasted moving occluder it restores the
occluded part of the object better than per-frame OpenCV Telea (hole PSNR and SSIM)."""

from pathlib import Path

import numpy as np
import pytest

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "instseg" / "weights" / "voin_default.pt"
DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-train-subset"
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped VOIN model")


def test_release_file_is_small_fp16_trained_and_has_a_card(release_file):
    meta = release_file(WEIGHTS)["meta"]
    assert meta["task"] == "voin" and meta["trained"] is True
    assert not set(meta["train_sequences"]) & set(meta["held_out_sequences"])


@pytest.mark.skipif(not (DAVIS / "JPEGImages").is_dir(), reason="needs ../shared/data")
def test_default_beats_telea_on_a_held_out_davis_clip(tmp_path):
    from instseg.data.video_occlusion import make_eval_split
    from instseg.evaluation.inpainting import frame_metrics
    from instseg.inference.inpainter import Inpainter
    from instseg.models.inpainting.baselines import inpaint_opencv
    from instseg.utils.image import read_image

    man = make_eval_split(DAVIS, ["bus"], seed=0, out_dir=tmp_path, num_frames=6)
    files = man["sequences"]["bus"]["files"]

    def load(kind: str) -> np.ndarray:
        return np.stack([read_image(tmp_path / kind / "bus" / f) for f in files])

    frames, gt = load("frames"), load("gt")
    visible, holes, amodal = (load(k)[..., 0] > 127 for k in ("visible", "holes", "amodal"))
    inp = Inpainter.from_weights(None, progress=False)
    assert inp.learned
    out = inp.inpaint(frames, visible, amodal=amodal, label=0).frames
    telea = inpaint_opencv(frames, holes, method="telea")

    def score(pred: np.ndarray, key: str) -> float:
        return float(
            np.mean([frame_metrics(p, g, h)[key] for p, g, h in zip(pred, gt, holes, strict=True)])
        )

    for key in ("hole_psnr", "hole_ssim"):
        assert score(out, key) > score(telea, key), key


def test_shipped_file_records_the_generator_scale_and_inference_uses_it():
    """The card's generator stage trained on 64-pixel-high frames (configs/voin_davis.yaml):
    inference feeds it object crops of at most 64 pixels, not 256."""
    from instseg.inference.inpainter import Inpainter, load_voin_weights

    _, meta = load_voin_weights(WEIGHTS)
    sizes = meta.model.get("stage_sizes") or meta.training["stage_sizes"]  # flat meta layout
    assert sizes == {"shape": 128, "flow": 128, "generator": 64}
    assert Inpainter.from_weights(WEIGHTS, progress=False).generator_max_side == 64
