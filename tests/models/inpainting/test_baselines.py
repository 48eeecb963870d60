"""``inpaint_opencv`` with a ``source`` mask (VOIN's occlusion-aware leftover fill): the fill
draws only on the given pixels, so an occluder bordering the hole does not bleed into it."""

from __future__ import annotations

import numpy as np
import pytest

from instseg.models.inpainting.baselines import inpaint_opencv

A = np.array([200, 60, 40], np.uint8)  # the object's colour
B = np.array([20, 210, 30], np.uint8)  # the occluder's colour


def _scene(t: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object = columns 0-29 of a 40 x 40 frame (colour A with mild noise); an occluder
    (colour B) covers columns 20-39, so the hole (object & occluder) is columns 20-29 and its
    right border is occluder. Returns frames, hole, object mask."""
    rng = np.random.default_rng(0)
    frames = np.zeros((t, 40, 40, 3), np.uint8)
    frames[:, :, :30] = A + rng.integers(0, 3, (t, 40, 30, 3), dtype=np.uint8)
    frames[:, :, 20:] = B
    obj = np.zeros((t, 40, 40), bool)
    obj[:, :, :30] = True
    hole = obj.copy()
    hole[:, :, :20] = False
    return frames, hole, obj


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_source_keeps_the_occluder_out_of_the_fill(method):
    frames, hole, obj = _scene()
    plain = inpaint_opencv(frames, hole, method=method)
    aware = inpaint_opencv(frames, hole, method=method, source=obj)
    err = {
        k: np.abs(x[hole].astype(int) - A.astype(int)).max(-1)
        for k, x in (("p", plain), ("a", aware))
    }
    assert err["a"].max() <= 4  # object colour everywhere in the hole
    assert (err["p"] > 60).mean() > 0.2  # plain inpainting takes the occluder's colour
    for x in (plain, aware):  # nothing outside the hole changes
        np.testing.assert_array_equal(x[~hole], frames[~hole])


def test_frame_without_source_pixels_falls_back_to_plain_inpainting():
    frames, hole, obj = _scene()
    src = obj.copy()
    src[1] = hole[1]  # frame 1: nothing outside the hole to draw on
    out = inpaint_opencv(frames, hole, source=src)
    plain = inpaint_opencv(frames, hole)
    np.testing.assert_array_equal(out[1], plain[1])
    assert not np.array_equal(out[0], plain[0])


def test_source_of_another_shape_is_an_error():
    frames, hole, obj = _scene()
    with pytest.raises(ValueError, match="source"):
        inpaint_opencv(frames, hole, source=obj[:, :20])


def test_propagation_baseline_object_context_needs_amodal():
    from instseg.models.inpainting.baselines import propagation_baseline

    frames, hole, obj = _scene()
    flow = np.zeros((1, 40, 40, 2), np.float32)
    with pytest.raises(ValueError, match="amodal"):
        propagation_baseline(frames, hole, flow, flow, object_context=True)
    res = propagation_baseline(frames, hole, flow, flow, amodal=obj, object_context=True)
    assert res.fallback.sum() == hole.sum()  # static: nothing to propagate
    np.testing.assert_array_equal(res.frames, inpaint_opencv(frames, hole, source=obj))
