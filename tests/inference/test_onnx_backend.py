"""ONNX Runtime backend: same detections and masks as the eager fp32 model, picked by default on
CPU, torch where it must be (explanations, forced low precision, export failure)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.models.zoo import build_model
from instseg.structures import Instances
from instseg.structures.batch import Batch, collate_images

pytest.importorskip("onnxruntime")

from instseg.inference.onnx_backend import OnnxRuntimeSegmenter  # noqa: E402

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "src" / "instseg" / "weights"
WEIGHTS = WEIGHTS_DIR / "demo_image.pt"
# both shipped image models: the legacy-pooling demo model and the default (aligned RoIAlign)
SHIPPED_IMAGE = [p for p in (WEIGHTS, WEIGHTS_DIR / "objects_default.pt") if p.is_file()]


def _eager(model: torch.nn.Module, image: torch.Tensor) -> Instances:
    images, sizes = collate_images([image])
    with torch.no_grad():
        return model.predict(Batch(images=images, image_sizes=sizes, orig_sizes=sizes))[0]


def _assert_same(a: Instances, b: Instances) -> None:
    assert len(a) == len(b) > 0
    torch.testing.assert_close(a.boxes, b.boxes, atol=2e-3, rtol=1e-4)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=1e-4)
    assert torch.equal(a.labels, b.labels)
    inter = (a.masks & b.masks).sum((1, 2)).float()
    union = (a.masks | b.masks).sum((1, 2)).float()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    assert float(iou.min()) > 0.98


@pytest.mark.parametrize("name", ["effl0_fcos_bcnet", "effl0_fcos_cpmask", "effl0_fcos_maskrcnn"])
def test_onnxruntime_matches_eager_fp32(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, pretrained=False, max_detections=8).eval()
    image = torch.rand(3, 100, 150, generator=torch.Generator().manual_seed(1)) * 255
    ort = OnnxRuntimeSegmenter(model)
    out, ref = ort.predict_image(image), _eager(model, image)
    assert not any(m.training for m in model.modules())  # tracing left the model in eval mode
    assert out.image_size == (100, 150) and out.masks.shape == (len(out), 100, 150)
    assert float(out.boxes[:, 2].max()) <= 150 and float(out.boxes[:, 3].max()) <= 100
    # a random-init detector's candidates nearly tie (NMS then keeps other ones on 1e-6
    # differences), so compare the best score, and the mask graph on the eager model's boxes;
    # the trained model's full outputs are compared in the predictor test below
    torch.testing.assert_close(out.scores.max(), ref.scores.max(), atol=1e-4, rtol=1e-4)
    detect, mask = ort._sessions_for(100, 150)
    x = np.zeros((1, 3, 128, 160), np.float32)
    x[0, :, :100, :150] = image.numpy()
    _, _, _, *levels = detect.run(None, {"images": x})
    feeds = {"boxes": ref.boxes.numpy(), "labels": ref.labels.numpy()}
    feeds.update({f"feat_{n}": v for n, v in zip(ort.levels, levels, strict=True)})
    wanted = {i.name for i in mask.get_inputs()}
    (probs,) = mask.run(None, {k: v for k, v in feeds.items() if k in wanted})
    images, sizes = collate_images([image])
    with torch.no_grad():
        feats, padded = model.features(images)
        heads = model.mask_head(model.mask_roi_pool(feats, [ref.boxes], [padded]))
        want = model.mask_head.predict(heads, ref.labels).float()
    torch.testing.assert_close(torch.from_numpy(probs), want, atol=1e-4, rtol=1e-3)


def test_faster_rcnn_is_left_to_torch() -> None:
    from instseg.inference.onnx_backend import supports

    model = build_model("effl0_frcnn_maskrcnn", num_classes=3, pretrained=False).eval()
    assert not supports(model)
    with pytest.raises(ValueError, match="FCOS"):
        OnnxRuntimeSegmenter(model)


def test_score_threshold_drops_before_the_mask_graph_and_sizes_are_cached() -> None:
    torch.manual_seed(0)
    model = build_model("effl0_fcos_maskrcnn", num_classes=3, pretrained=False).eval()
    ort = OnnxRuntimeSegmenter(model, num_detections=10)
    g = torch.Generator().manual_seed(2)
    a = torch.rand(3, 64, 96, generator=g) * 255
    full = ort.predict_image(a)
    assert 0 < len(full) <= 10
    cut = float(full.scores.median())
    part = ort.predict_image(a, score_thresh=cut)
    assert len(part) == int((full.scores >= cut).sum())
    assert len(ort.predict_image(a, score_thresh=2.0)) == 0  # no detection: no mask graph run
    assert len(ort._sessions) == 1
    ort.predict_image(torch.rand(3, 70, 96, generator=g) * 255)
    assert len(ort._sessions) == 2


@pytest.mark.parametrize("weights", SHIPPED_IMAGE, ids=lambda p: p.stem)
def test_predictor_default_on_cpu_is_onnxruntime_and_matches_torch(weights, monkeypatch) -> None:
    from instseg.data.synthetic import SceneConfig, make_scene
    from instseg.inference.predictor import ImagePredictor

    rng = np.random.default_rng([4242, 1])
    image, _ = make_scene(rng, SceneConfig(min_objects=2, max_objects=3, occlusion=0.2))
    auto = ImagePredictor(weights, device="cpu", score_thresh=0.05)
    ref = ImagePredictor(weights, device="cpu", amp="none", backend="torch", score_thresh=0.05)
    assert auto.backend == "onnxruntime" and auto.amp == "none" and ref.backend == "torch"
    _assert_same(auto(image), ref(image))
    # explanations need the head's maps: that call runs in torch
    assert auto(image, return_head_outputs=True).mask_logits is not None
    assert ImagePredictor(WEIGHTS, device="cpu", amp="bf16").backend == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        ImagePredictor(WEIGHTS, device="cpu", backend="tensorrt")


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped image model")
def test_predictor_falls_back_to_torch_with_one_warning(monkeypatch, caplog) -> None:
    from instseg.inference.predictor import ImagePredictor

    pred = ImagePredictor(WEIGHTS, device="cpu", score_thresh=0.05)

    def broken(*a, **k):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(pred._ort, "predict_image", broken)
    image = np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING):
        out = pred(image)
        pred(image)
    assert pred.backend == "torch" and out.image_size == (80, 120)
    warnings = [r for r in caplog.records if "onnxruntime backend failed" in r.getMessage()]
    assert len(warnings) == 1 and "unsupported operator" in warnings[0].getMessage()
