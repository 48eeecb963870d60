"""PCAN on the image InstanceSegmenter: training pair loss, online prediction, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from instseg.models.video.cross_attention import build_multilevel_pcam
from instseg.models.video.instance_prototypes import (
    InstancePrototypeAttention,
    TemporalSegmentationModule,
)
from instseg.models.video.pcan import PCAN
from instseg.models.video.tracker import Tracker, TrackHead
from instseg.models.zoo import effl0_fcos_maskrcnn
from instseg.structures import Instances
from instseg.structures.batch import Batch, ClipBatch
from instseg.structures.masks import masks_to_boxes

C = 32


def _frame(shift: int) -> Batch:
    """64x64 frame with two moving rectangles (track ids 5 and 9)."""
    img = torch.zeros(1, 3, 64, 64)
    m = torch.zeros(2, 64, 64, dtype=torch.bool)
    m[0, 10 + shift : 30 + shift, 10:30] = True
    m[1, 40:60, 35 + shift : 55 + shift] = True
    img[:, 0][m[0:1]] = 255.0
    img[:, 1][m[1:2]] = 200.0
    t = Instances(
        image_size=(64, 64),
        boxes=masks_to_boxes(m).float(),
        labels=torch.tensor([0, 1]),
        masks=m,
        track_ids=torch.tensor([5, 9]),
    )
    return Batch(images=img, image_sizes=[(64, 64)], targets=[t])


def _pcan(segmenter: nn.Module, **kw: object) -> PCAN:
    torch.manual_seed(0)
    return PCAN(
        segmenter=segmenter,
        pcam=build_multilevel_pcam(
            levels=("p3", "p4", "p5"), in_channels=C, num_prototypes=4, key_channels=8
        ),
        track_head=TrackHead(in_channels=C, num_convs=1, conv_channels=32, fc_dim=64, embed_dim=32),
        instance_attention=InstancePrototypeAttention(
            in_channels=C, key_channels=8, num_fg=3, num_bg=3
        ),
        tsm=TemporalSegmentationModule(in_channels=C, hidden=16),
        memory_length=2,
        **kw,  # type: ignore[arg-type]
    )


def _image_model() -> nn.Module:
    torch.manual_seed(0)
    return effl0_fcos_maskrcnn(num_classes=2, pretrained=False, fpn_channels=C, max_detections=10)


def test_loss_keys_backward_and_fall() -> None:
    seg = _image_model()
    model = _pcan(seg, tracker=Tracker())
    clip = ClipBatch(key=_frame(2), reference=_frame(0))
    losses = model.loss(clip)
    assert {"loss_cls", "loss_mask", "loss_track", "loss_track_aux", "loss_tsm"} <= set(losses)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for p in (
        model.pcam.levels["p3"].fuse.weight,
        model.track_head.embed.weight,
        model.tsm.out.weight,
        seg.mask_head.predictor.weight,
    ):  # type: ignore[union-attr]
        assert p.grad is not None and p.grad.abs().sum() > 0
    opt = torch.optim.Adam(
        [p for n, p in model.named_parameters() if not n.startswith("segmenter")], lr=3e-3
    )
    track = []
    for _ in range(8):
        torch.manual_seed(1)  # same RoI jitter each step
        out = model.loss(clip)
        loss = out["loss_track"] + out["loss_track_aux"] + out["loss_tsm"]
        track.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert track[-1] < 0.8 * track[0]


def test_untrained_pcam_and_tsm_reproduce_the_image_model() -> None:
    """Zero-initialised fusion and TSM: PCAN's detections and masks equal the image model's."""
    seg = _image_model().eval()
    tracker = Tracker(init_score_thresh=0.0, obj_score_thresh=0.0)
    model = _pcan(seg, tracker=tracker).eval()
    frame = _frame(0)
    ref = seg.predict(frame)[0]
    state = model.init_state()
    out, state = model.predict_frame(frame, state)
    out2, state = model.predict_frame(frame, state)  # now with one frame of memory
    assert "_features" not in seg.__dict__  # the feature hook is removed after each call
    for o in (out, out2):
        assert len(o) == len(ref) > 0
        assert torch.allclose(o.boxes, ref.boxes, atol=1e-4)
        assert torch.equal(o.masks, ref.masks)
        assert "mask" not in o.extra
    assert out.track_ids.tolist() == list(range(len(ref)))
    assert state.memory.num_frames("p3") == 2


class _OracleSegmenter(nn.Module):
    """A FeatureSegmenter that 'detects' the two rectangles of :func:`_frame` perfectly."""

    mask_thresh = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3, padding=1)

    def features(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
        x = self.conv(images / 255.0)
        pools = {f"p{k}": nn.functional.avg_pool2d(x, 2**k) for k in (3, 4, 5)}
        return pools, (int(images.shape[-2]), int(images.shape[-1]))

    def loss_from_features(self, features: dict, padded: tuple[int, int], batch: Batch) -> dict:
        return {"loss_dummy": sum(f.mean() for f in features.values())}

    def predict_from_features(
        self, features: dict, padded: tuple[int, int], batch: Batch, **kw: object
    ) -> list[Instances]:
        shift = int(batch.images[0, 0].nonzero()[:, 0].min()) - 10
        t = _frame(shift).targets[0]  # type: ignore[index]
        return [t.replace(scores=torch.tensor([0.9, 0.8]), track_ids=None)]


def test_identities_and_bounded_state_over_a_video() -> None:
    model = _pcan(_OracleSegmenter(), tracker=Tracker(), instance_update="momentum").eval()
    state = model.init_state()
    ids = []
    for t in range(6):
        frame = _frame(t)
        out, state = model.predict_frame(frame, state)
        ids.append(out.track_ids.tolist())
        assert out.masks is not None and out.masks.shape == (2, 64, 64)
        # untrained TSM keeps the initial masks
        assert torch.equal(out.masks, frame.targets[0].masks)  # type: ignore[index]
        assert state.memory.num_prototypes() <= 3 * 2 * 4
        assert set(state.instance_protos) == {0, 1}
    assert ids == [[0, 1]] * 6
    assert state.tracks.frame == 6


def test_tracking_loss_rois_include_background() -> None:
    model = _pcan(_image_model(), tracker=Tracker())
    rois, ids = model._sample_rois(_frame(0), torch.Generator().manual_seed(0))
    assert int((ids[0] == -1).sum()) == int((ids[0] >= 0).sum()) > 0  # neg_ratio 1
    model.track_neg_ratio = 0.0
    _, ids = model._sample_rois(_frame(0), torch.Generator().manual_seed(0))
    assert int((ids[0] == -1).sum()) == 0


def test_instance_rois_come_from_the_mask_heads_pooling() -> None:
    """Issue 15 deliverable 2: the TSM reads the level the mask head reads (P2 for a small
    box), not P3-P5; "track" keeps the old pooling for files trained with it."""
    seg = _image_model()
    model = _pcan(seg, tracker=Tracker())
    assert model.instance_rois == "mask"
    feats, pad = seg.features(_frame(0).images)
    boxes = [torch.tensor([[10.0, 10.0, 30.0, 30.0]])]
    mask = model._inst_rois(feats, boxes, pad)
    assert torch.equal(mask, seg.mask_roi_pool(feats, boxes, [pad]))
    model.instance_rois = "track"
    track = model._inst_rois(feats, boxes, pad)
    assert torch.equal(track, model.inst_pool(feats, boxes, [pad]))
    assert mask.shape == track.shape and not torch.allclose(mask, track)
    with pytest.raises(ValueError, match="instance_rois"):
        model.instance_rois = "p2"


def test_tsm_is_trained_on_the_mask_heads_predictions_over_the_tube(monkeypatch) -> None:
    """The TSM's initial mask is the mask head's own detached prediction at the key box (not a
    shifted GT mask), and the prototypes run through Eq. 5.8 over every past frame."""
    seg = _image_model()
    model = _pcan(seg, tracker=Tracker())
    torch.nn.init.normal_(model.tsm.out.weight, std=0.1)  # zero-init would block the gradient
    clip = ClipBatch(key=_frame(4), reference=_frame(2), memory=(_frame(0),))
    seen_initial, fits, updates = [], [], []
    tsm_forward = model.tsm.forward
    fit = model.instance_attention.fit

    def spy_tsm(feats, initial_logits, attn):  # noqa: ANN001, ANN202
        seen_initial.append(initial_logits)
        return tsm_forward(feats, initial_logits, attn)

    def spy_fit(feats, masks, *, init=None):  # noqa: ANN001, ANN202
        fits.append(init is not None)
        return fit(feats, masks, init=init)

    import instseg.models.video.pcan as pcan_module

    real_update = pcan_module.update_instance_prototypes

    def spy_update(prev, cur, **kw):  # noqa: ANN001, ANN202
        updates.append(prev is not None)
        return real_update(prev, cur, **kw)

    monkeypatch.setattr(model.tsm, "forward", spy_tsm)
    monkeypatch.setattr(model.instance_attention, "fit", spy_fit)
    monkeypatch.setattr(pcan_module, "update_instance_prototypes", spy_update)
    losses = model.loss(clip)
    # three frames: fresh fit on the memory frame, EM-initialised fits on reference and key
    assert fits == [False, True, True] and updates == [False, True, True]
    key = clip.key
    feats, pad = seg.features(key.images)
    fused, _ = model.pcam(feats, model.init_state().memory)  # untrained PCAM: identity fusion
    t = key.targets[0]  # type: ignore[index]
    seg.mask_head.eval()
    with torch.no_grad():
        head = seg.mask_head(seg.mask_roi_pool(fused, [t.boxes.float()], [pad]))["mask"]
    expected = head[torch.arange(2), 0][:, None]
    (initial,) = seen_initial
    assert not initial.requires_grad
    assert torch.allclose(initial, expected, atol=1e-5)
    losses["loss_tsm"].backward()
    assert model.instance_attention.key.weight.grad.abs().sum() > 0  # Eq. 5.8 in the graph
    assert model.tsm.out.weight.grad.abs().sum() > 0
