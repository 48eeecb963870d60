"""The shipped default VOIN (src/instseg/weights/voin_default.pt, see its model card): a small,
safe fp16 file, and on a held-out real DAVIS clip with a pasted moving occluder it restores the
occluded part of the object better than per-frame OpenCV Telea (hole PSNR and SSIM), and better
than the non-learned pipeline (propagation along the filled DIS flow over the whole clip + Telea);
its generator, off by default since issue 16 (the file's recommended stage switches), still runs
and fills when switched on."""

from pathlib import Path

import numpy as np
import pytest

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "instseg" / "weights" / "voin_default.pt"
DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-train-subset"
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped VOIN model")


def test_release_file_is_small_fp16_trained_and_has_a_card(release_file):
    meta = release_file(WEIGHTS)["meta"]
    assert meta["task"] == "voin" and meta["trained"] is True
    training = meta["training"]
    assert not set(training["train_sequences"]) & set(training["held_out_sequences"])
    assert {"boat", "bus", "elephant"} <= set(training["held_out_sequences"])
    # issue 16: the leftover generator, trained on occlusion-aware leftovers
    assert meta["model"]["generator_mode"] == "leftover"
    assert training["leftover"]["context"] == "object"


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
    """The card's leftover generator trained on object crops with a longer side of 64 pixels
    (configs/voin_default_leftover.yaml): inference feeds it crops of exactly that scale."""
    from instseg.inference.inpainter import Inpainter, load_voin_weights

    _, meta = load_voin_weights(WEIGHTS)
    sizes = meta.model.get("stage_sizes") or meta.training["stage_sizes"]  # flat meta layout
    assert sizes == {"shape": 128, "flow": 128, "generator": 64}
    assert Inpainter.from_weights(WEIGHTS, progress=False).generator_max_side == 64


def test_shipped_file_recommends_the_best_measured_stages():
    """The card's table (issue 16, deliverable 4): with this file, flow net off + generator off
    is the best configuration measured on its DAVIS split (24.08 dB hole PSNR / SSIM 0.7137 vs
    24.10 / 0.7136 with the generator, a tie, and 23.71 with both), so the file recommends both
    off and the default Inpainter runs that; explicit options still turn them on."""
    from instseg.inference.inpainter import (
        Inpainter,
        InpaintOptions,
        load_voin_weights,
        recommended_stages,
    )

    assert recommended_stages(load_voin_weights(WEIGHTS)[1]) == {
        "use_flow_net": False,
        "use_generator": False,
    }
    inp = Inpainter.from_weights(None, progress=False)
    assert inp.source == str(WEIGHTS) and not inp.refines_flow and not inp.generates
    on = InpaintOptions(use_flow_net=True, use_generator=True)
    inp = Inpainter.from_weights(None, options=on, progress=False)
    assert inp.refines_flow and inp.generates


@pytest.fixture(scope="module")
def held_out_clip(tmp_path_factory) -> dict[str, np.ndarray]:
    """6 frames of the held-out DAVIS 'elephant' (the card's split settings, seed 0: a moving
    occluder, a cutout of a training sequence's object or a synthetic shape), at half size
    (240 x 427): frames, gt, visible, amodal, holes (= amodal & ~visible)."""
    if not (DAVIS / "JPEGImages").is_dir():
        pytest.skip("needs ../shared/data")
    import cv2

    from instseg.data.davis_splits import VOIN_TRAIN
    from instseg.data.video_occlusion import make_eval_split
    from instseg.utils.image import read_image

    out = tmp_path_factory.mktemp("held_out")
    man = make_eval_split(
        DAVIS,
        ["elephant"],
        seed=0,
        out_dir=out,
        num_frames=6,
        occluder_sequences=list(VOIN_TRAIN),
    )
    files = man["sequences"]["elephant"]["files"]

    def load(kind: str, interpolation: int) -> np.ndarray:
        images = (read_image(out / kind / "elephant" / f) for f in files)
        return np.stack([cv2.resize(x, (427, 240), interpolation=interpolation) for x in images])

    clip = {k: load(k, cv2.INTER_AREA) for k in ("frames", "gt")}
    visible, amodal = (load(k, cv2.INTER_NEAREST)[..., 0] > 127 for k in ("visible", "amodal"))
    clip |= {"visible": visible & amodal, "amodal": amodal, "holes": amodal & ~visible}
    assert clip["holes"].any((1, 2)).all()
    return clip


def _hole_scores(pred: np.ndarray, clip: dict[str, np.ndarray]) -> tuple[float, float]:
    from instseg.evaluation.inpainting import frame_metrics

    m = [frame_metrics(p, g, h) for p, g, h in zip(pred, clip["gt"], clip["holes"], strict=True)]
    return float(np.mean([x["hole_psnr"] for x in m])), float(np.mean([x["hole_ssim"] for x in m]))


def test_default_beats_propagation_and_telea_on_a_held_out_clip(held_out_clip):
    """Issue 16, deliverable 7: the shipped default beats the non-learned pipeline
    (whole-clip propagation on the filled DIS flow + plain Telea, the ``Inpainter`` without a
    model and ``leftover_context="frame"``) on hole PSNR and SSIM, not just Telea. What makes
    the difference today is VOIN's occlusion-aware leftover fill (Telea drawing on the object's
    own pixels only, not on the occluder around the hole): measured 27.70 vs 23.08 dB and
    0.678 vs 0.632 here. With the ground-truth amodal masks the default is that fill on the
    same propagation (the file recommends its flow net and generator off), so it equals the
    non-learned pipeline with ``leftover_context="object"``."""
    from instseg.inference.inpainter import Inpainter, InpaintOptions

    c = held_out_clip
    default = Inpainter.from_weights(None, progress=False)
    assert default.learned and default.options.leftover_context == "object"
    out = default.inpaint(c["frames"], c["visible"], amodal=c["amodal"], label=0).frames

    def plain(context: str) -> np.ndarray:
        opts = InpaintOptions(leftover_context=context)
        base = Inpainter(model=None, options=opts, progress=False)
        return base.inpaint(c["frames"], c["visible"], amodal=c["amodal"]).frames

    (psnr, ssim), (ref_psnr, ref_ssim) = _hole_scores(out, c), _hole_scores(plain("frame"), c)
    assert psnr >= ref_psnr + 2.0, (psnr, ref_psnr)
    assert ssim >= ref_ssim + 0.02, (ssim, ref_ssim)
    np.testing.assert_array_equal(out, plain("object"))


def test_generator_switched_on_fills_the_leftovers(held_out_clip):
    """The generator stage, off by default, runs when switched on (``use_generator``): it
    receives the pixels propagation could not fill (a sizeable share of this clip's hole), every
    one of them is flagged as generated (none as Telea), and the shipped leftover generator
    (residual on the object-context Telea fill, issue 16) does no harm there: leftover PSNR
    within 0.1 dB of that fill's and >= 4 dB above plain Telea's (measured 26.27, 26.27 and
    20.32: its learned correction is ~0.2 grey levels and rounds away on this clip; see the
    card). Full VOIN (flow net + generator) beats propagation + plain Telea on hole PSNR and
    SSIM (measured 27.67 / 0.678 vs 23.08 / 0.632)."""
    from instseg.inference.inpainter import Inpainter, InpaintOptions

    c = held_out_clip
    on = Inpainter.from_weights(None, options=InpaintOptions(use_generator=True), progress=False)
    assert on.model.generator.residual  # the leftover generator
    calls: list[int] = []
    on.model.generator.register_forward_hook(lambda *_: calls.append(1))
    res = on.inpaint(c["frames"], c["visible"], amodal=c["amodal"], label=0)
    left = res.generated
    assert calls and left.sum() > 0.2 * c["holes"].sum()
    np.testing.assert_array_equal(left, c["holes"] & ~res.propagated)
    assert not res.fallback.any()

    def run(**options) -> np.ndarray:
        inp = Inpainter.from_weights(None, options=InpaintOptions(**options), progress=False)
        return inp.inpaint(c["frames"], c["visible"], amodal=c["amodal"], label=0)

    telea = run()
    np.testing.assert_array_equal(telea.fallback, left)  # the same leftovers, Telea-filled
    plain = run(leftover_context="frame").frames

    def leftover_psnr(pred: np.ndarray) -> float:
        err = (pred[left].astype(np.float64) - c["gt"][left]) ** 2
        return float(10 * np.log10(255**2 / err.mean()))

    assert leftover_psnr(res.frames) >= leftover_psnr(telea.frames) - 0.1
    assert leftover_psnr(res.frames) >= leftover_psnr(plain) + 4.0
    full = run(use_flow_net=True, use_generator=True).frames
    (psnr, ssim), (ref_psnr, ref_ssim) = _hole_scores(full, c), _hole_scores(plain, c)
    assert psnr > ref_psnr + 2.0 and ssim > ref_ssim, (psnr, ssim, ref_psnr, ref_ssim)
