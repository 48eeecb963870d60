"""Contract tests for every PCAN zoo variant: pair loss with finite terms and gradients into the
video modules, then online prediction over three frames with stable state."""

from __future__ import annotations

import pytest
import torch

from instseg.models.video.pcan import PCAN
from instseg.models.video.zoo import PCAN_MODELS, build_pcan
from instseg.structures import Instances
from instseg.structures.batch import Batch, ClipBatch
from instseg.structures.masks import masks_to_boxes


def _frame(shift: int) -> Batch:
    img = torch.zeros(1, 3, 96, 128)
    m = torch.zeros(2, 96, 128, dtype=torch.bool)
    m[0, 10 + shift : 40 + shift, 10:50] = True
    m[1, 50:90, 60 + shift : 110 + shift] = True
    img[:, 0][m[0:1]] = 255.0
    img[:, 1][m[1:2]] = 180.0
    t = Instances(
        image_size=(96, 128),
        boxes=masks_to_boxes(m).float(),
        labels=torch.tensor([0, 1]),
        masks=m,
        track_ids=torch.tensor([3, 7]),
    )
    return Batch(images=img, image_sizes=[(96, 128)], targets=[t], orig_sizes=[(96, 128)])


@pytest.mark.parametrize("name", sorted(PCAN_MODELS))
def test_pcan_variant_loss_backward_predict(name):
    torch.manual_seed(0)
    model = build_pcan(name, num_classes=2, pretrained=False, memory_length=2)
    assert isinstance(model, PCAN)
    model.train()
    losses = model.loss(ClipBatch(key=_frame(3), reference=_frame(0)))
    assert {"loss_cls", "loss_mask", "loss_track"} <= set(losses)
    for k, v in losses.items():
        assert v.ndim == 0 and torch.isfinite(v), k
    sum(losses.values()).backward()
    video_params = [p for n, p in model.named_parameters() if not n.startswith("segmenter")]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in video_params)
    model.eval()
    state = model.init_state()
    with torch.no_grad():
        for t in range(3):
            inst, state = model.predict_frame(_frame(2 * t), state)
            assert inst.image_size == (96, 128) and inst.track_ids is not None
            assert len(inst.track_ids) == len(inst) and torch.isfinite(inst.boxes).all()
    assert all(state.memory.num_frames(lv) <= 2 for lv in state.memory.keys)  # bounded


def test_image_only_baseline_has_no_memory():
    """pcan_fast_image (issue 15's image-only row): same segmenter, track head and tracker as
    pcan_fast (the same initial weights under one seed), no PCAM levels, no instance prototypes
    / TSM, no TSM loss; a frame's detections do not depend on the frames before it (only the
    track ids can)."""
    torch.manual_seed(0)
    full = build_pcan("pcan_fast", num_classes=2, pretrained=False)
    torch.manual_seed(0)
    image = build_pcan("pcan_fast_image", num_classes=2, pretrained=False)
    assert len(image.pcam.levels) == 0 and image.tsm is None and image.instance_attention is None
    # the per-frame part is the same network (same parameter names and shapes)
    shapes = {n: p.shape for n, p in full.named_parameters() if not n.startswith(("pcam", "tsm"))}
    shapes = {n: s for n, s in shapes.items() if not n.startswith("instance_attention")}
    assert shapes == {n: p.shape for n, p in image.named_parameters()}
    # ... and under one seed the same initial state (the temporal modules are built last)
    ref = dict(full.named_parameters())
    assert all(torch.equal(p, ref[n]) for n, p in image.named_parameters())
    image.train()
    losses = image.loss(ClipBatch(key=_frame(3), reference=_frame(0)))
    assert "loss_tsm" not in losses and "loss_track" in losses
    image.eval()
    with torch.no_grad():
        feats, _ = image.segmenter.features(_frame(4).images)
        state = image.init_state()
        for t in range(3):  # the online path runs, and never stores anything to read
            _, state = image.predict_frame(_frame(3 * t), state)
        fused, memory = image.pcam(feats, state.memory)
    assert all(torch.equal(fused[k], feats[k]) for k in feats)
    assert sum(memory.num_frames(lv) for lv in memory.keys) == 0


def test_instance_prototype_settings_from_the_config():
    """The trained ablation rows of Tables 5.6 / 5.7 are config keys of the video model (and so
    are saved with it): fg / bg instance prototype counts and the Eq. 5.8 update."""
    from instseg.models.build import VideoModelConfig, build_video_model_from_config

    cfg = VideoModelConfig(name="pcan_tiny", pretrained=False, instance_prototypes=[2, 5],
                           instance_update="initial", instance_momentum=0.5)  # fmt: skip
    model = build_video_model_from_config(cfg, num_classes=2)
    ia = model.instance_attention
    assert (ia.num_fg, ia.num_bg) == (2, 5)
    assert (model.instance_update, model.instance_momentum) == ("initial", 0.5)
    default = build_video_model_from_config(VideoModelConfig(name="pcan_tiny"), num_classes=2)
    assert (default.instance_attention.num_fg, default.instance_update) == (3, "momentum")
    with pytest.raises(ValueError, match="instance_update must be one of"):
        build_pcan("pcan_tiny", num_classes=2, instance_update="sometimes")
    with pytest.raises(ValueError, match="foreground, background"):
        build_pcan("pcan_tiny", num_classes=2, instance_prototypes=[4])
