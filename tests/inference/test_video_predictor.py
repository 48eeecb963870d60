"""VideoPredictor: identities over a tiny synthetic video, bounded state, weights round trip.

The image part is a stub :class:`FeatureSegmenter` that detects the two coloured squares by
thresholding (so the test checks PCAN's tracking path and the predictor's state handling, not
an untrained detector's scores)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from instseg.inference.video_predictor import VideoPredictor
from instseg.models.video.cross_attention import LEGACY_PCAM_SETTINGS, build_multilevel_pcam
from instseg.models.video.instance_prototypes import (
    InstancePrototypeAttention,
    TemporalSegmentationModule,
)
from instseg.models.video.pcan import PCAN
from instseg.models.video.tracker import Tracker, TrackHead
from instseg.structures import Instances
from instseg.structures.masks import masks_to_boxes

C = 16


class ColourSegmenter(nn.Module):
    """Stub image model: channel-dominant blobs are the detections (label = channel)."""

    mask_thresh = 0.5

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Conv2d(3, C, 3, padding=1)

    def features(self, images: Tensor) -> tuple[dict[str, Tensor], tuple[int, int]]:
        x = self.proj(images / 255.0)
        feats = {f"p{k}": nn.functional.avg_pool2d(x, 2**k) for k in (3, 4, 5)}
        return feats, (int(images.shape[-2]), int(images.shape[-1]))

    def loss_from_features(self, features, padded, batch):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def predict_from_features(self, features, padded, batch, *, return_head_outputs=False):  # noqa: ANN001, ANN201
        h, w = batch.image_sizes[0]
        img = batch.images[0, :, :h, :w]
        masks = torch.stack([(img[c] > 128) & (img.sum(0) < 400) for c in (0, 1)])
        masks = masks[masks.flatten(1).any(1)]
        n = len(masks)
        return [
            Instances(
                image_size=(h, w),
                boxes=masks_to_boxes(masks).float(),
                labels=torch.arange(n),
                scores=torch.full((n,), 0.9),
                masks=masks,
            )
        ]


def _pcan() -> PCAN:
    torch.manual_seed(0)
    return PCAN(
        segmenter=ColourSegmenter(),
        pcam=build_multilevel_pcam(
            levels=("p3", "p4", "p5"), in_channels=C, num_prototypes=4, key_channels=8
        ),
        track_head=TrackHead(in_channels=C, num_convs=1, conv_channels=16, fc_dim=32, embed_dim=16),
        tracker=Tracker(similarity="cosine", match_thresh=0.5, init_score_thresh=0.5),
        instance_attention=InstancePrototypeAttention(
            in_channels=C, key_channels=8, num_fg=3, num_bg=3
        ),
        tsm=TemporalSegmentationModule(in_channels=C, hidden=8),
        memory_length=3,
    )


def _video(n: int = 8) -> list[np.ndarray]:
    """A red square moving right and a green one moving down, on grey noise."""
    rng = np.random.default_rng(0)
    frames = []
    for t in range(n):
        f = rng.integers(60, 90, (72, 88, 3), dtype=np.uint8)
        f[10:26, 8 + 3 * t : 24 + 3 * t] = (230, 20, 20)
        f[30 + 3 * t : 46 + 3 * t, 50:66] = (20, 230, 20)
        frames.append(f)
    return frames


def test_identities_stay_constant_and_state_is_bounded() -> None:
    pred = VideoPredictor(_pcan(), min_size=72, max_size=100, amp="none", device="cpu")
    ids_by_label: dict[int, set[int]] = {0: set(), 1: set()}
    sizes = []
    for t, frame in enumerate(_video()):
        inst = pred(frame)
        assert inst.image_size == frame.shape[:2] and inst.masks.shape[1:] == frame.shape[:2]
        assert len(inst) == 2 and inst.track_ids is not None
        for lab, tid in zip(inst.labels.tolist(), inst.track_ids.tolist(), strict=True):
            ids_by_label[lab].add(tid)
        red = inst.masks[inst.labels == 0][0]
        assert red[18, 16 + 3 * t]  # the red square's centre, at the frame's own size
        st = pred.state
        sizes.append(
            (st.memory.num_frames("p3"), st.memory.num_prototypes(), len(st.tracks.tracks))
        )
    assert ids_by_label[0] == {0} and ids_by_label[1] == {1}  # one id per object, all frames
    assert [s[0] for s in sizes] == [1, 2, 3, 3, 3, 3, 3, 3]  # FIFO memory of T=3 frames
    assert len({s[1] for s in sizes[2:]}) == 1 and all(s[2] == 2 for s in sizes)
    assert set(pred.state.instance_protos) == {0, 1}
    pred.reset()
    assert pred.state.memory.num_frames("p3") == 0 and not pred.state.tracks.tracks
    assert pred(_video()[0]).track_ids.tolist() in ([0, 1], [1, 0])  # ids restart per video


def test_from_weights_round_trip(tmp_path) -> None:  # noqa: ANN001
    from instseg.engine.checkpoint import save_weights
    from instseg.models.video.zoo import pcan_tiny

    torch.manual_seed(0)
    model = pcan_tiny(num_classes=3)
    meta = {
        "task": "video",
        "model": {"name": "pcan_tiny", "pretrained": False, "frozen_bn": False},
        "num_classes": 3, "category_ids": [1, 2, 5], "class_names": ["a", "b", "c"],
        "test_min_size": 64, "max_size": 96,
    }  # fmt: skip
    save_weights(model, tmp_path / "m.pt", meta=meta)
    pred = VideoPredictor.from_weights(tmp_path / "m.pt", device="cpu", amp="none")
    assert pred.category_ids == [1, 2, 5] and pred.min_size == 64
    for k, v in model.state_dict().items():
        assert torch.equal(pred.model.state_dict()[k], v), k
    out = pred(_video(1)[0])
    assert out.image_size == (72, 88) and out.track_ids is not None
    # a file without recorded PCAM settings was trained with the fixed sigma / cosine weights
    assert pred.model.pcam.settings() == LEGACY_PCAM_SETTINGS != model.pcam.settings()


def test_tracker_settings_override_without_changing_the_model() -> None:
    model = _pcan()
    pred = VideoPredictor(model, min_size=72, max_size=100, amp="none", device="cpu",
                          tracker={"init_score_thresh": 0.95})  # fmt: skip
    assert pred.tracker.init_score_thresh == 0.95 and model.tracker.init_score_thresh == 0.5
    assert pred.tracker.similarity == "cosine"  # the other settings are the model's
    assert len(pred(_video()[0])) == 0  # detections score 0.9: no track is born
    assert len(VideoPredictor(model, min_size=72, max_size=100, amp="none")(_video()[0])) == 2
