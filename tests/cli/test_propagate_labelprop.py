"""``instseg propagate --method labelprop``: the standard label-propagation protocol from the
command line (ImageNet features, tiny synthetic clip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from instseg.cli.main import main
from instseg.data.davis import read_davis_label, write_davis_label
from instseg.data.synthetic_video import generate_videos
from instseg.data.ytvis import load_ytvis


def test_propagate_with_the_label_propagation_protocol(tmp_path: Path) -> None:
    ann = generate_videos(tmp_path / "clip", num_videos=1, num_frames=4, seed=7,
                          image_size=(160, 224))  # fmt: skip
    video = load_ytvis(ann, tmp_path / "clip")[0]
    gt = [video.label_map(t, objects=2) for t in range(4)]
    write_davis_label(tmp_path / "init" / "00000.png", gt[0])
    out = tmp_path / "semi"
    assert main(["propagate", "--source", str(video.frame_paths[0].parent), "--init-masks",
                 str(tmp_path / "init"), "--out", str(out), "--method", "labelprop",
                 "--no-video"]) == 0  # fmt: skip
    pred = [read_davis_label(p) for p in sorted((out / "masks").glob("*.png"))]
    assert len(pred) == 4 and np.array_equal(pred[0], gt[0])
    ids = set(np.unique(gt[0])) - {0}
    for p, g in zip(pred[1:], gt[1:], strict=True):
        assert set(np.unique(p)) <= ids | {0}
        for k in ids:
            inter, union = np.sum((p == k) & (g == k)), np.sum((p == k) | (g == k))
            assert union == 0 or inter / union > 0.4, (k, inter / union)
