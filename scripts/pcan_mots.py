"""MOTS metrics (TrackEval: sMOTSA, MOTSA, MOTSP, IDF1, ID switches, HOTA) of a class-agnostic
PCAN on the held-out synthetic videos of a training config.

    python scripts/pcan_mots.py --weights src/instseg/weights/pcan_default.pt \\
        --config configs/pcan_synthetic.yaml data.cache_dir=runs/pcan_data --out runs/pcan_mots

Ground truth: each test video's visible masks (YouTube-VIS JSON of the split) written as a
KITTI-MOTS txt, every track as class 1 ("car" in KITTI's numbering: TrackEval's KITTI-MOTS
reader only knows car / pedestrian, so class-agnostic objects are scored as "car"). Results: the
online tracker's masks, made non-overlapping like ``instseg track`` does (higher score on top),
same class. Sequence lengths are the videos' frame counts.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from instseg.config import load_config
from instseg.data.mots import instances_to_mots, video_to_mots, write_mots_txt
from instseg.data.ytvis import YTVISDataset
from instseg.evaluation.mots import evaluate_mots
from instseg.inference.video_predictor import VideoPredictor
from instseg.recipes.video import load_test_split
from instseg.recipes.video_config import VideoTrainConfig
from instseg.structures import Instances
from instseg.utils.image import read_image

KEYS = ("sMOTSA", "MOTSA", "MOTSP", "IDF1", "IDSW", "HOTA")


def track_split_mots(
    predictor: VideoPredictor,
    test: YTVISDataset,
    out: Path,
    *,
    score_thresh: float,
    on_frame: Callable[[str, Instances], None] | None = None,
) -> dict[str, Any]:
    """Track every video of ``test`` online; write its GT and the tracked masks above
    ``score_thresh`` as KITTI-MOTS txt under ``out/gt`` / ``out/results`` and return TrackEval's
    metrics (class "car" = class-agnostic objects). ``on_frame(file_name, instances)`` sees
    every frame's output (e.g. a YouTube-VIS evaluator)."""
    gt_dir, res_dir, lengths = out / "gt", out / "results", {}
    for video in test.videos:
        seq = f"{video.id:04d}"
        lengths[seq] = video.length
        write_mots_txt(gt_dir / f"{seq}.txt", video_to_mots(video))
        predictor.reset()
        res = []
        for t, path in enumerate(video.frame_paths):
            inst = predictor(read_image(path))
            if on_frame is not None:
                on_frame(video.file_names[t], inst)
            res += instances_to_mots(t, inst, score_thresh=score_thresh)
        write_mots_txt(res_dir / f"{seq}.txt", res)
    return evaluate_mots(gt_dir, res_dir, benchmark="kitti", seq_lengths=lengths, classes=["car"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", type=Path, default=Path("runs/pcan_mots"))
    p.add_argument("--score-thresh", type=float, default=0.3, help="keep tracked masks above")
    args = p.parse_args(argv)
    cfg = load_config(VideoTrainConfig, args.config, args.overrides)
    try:
        _, test = load_test_split(cfg)
    except ValueError as e:
        raise SystemExit(f"{args.config}: {e}") from None
    predictor = VideoPredictor.from_weights(args.weights, device="cpu")
    metrics = track_split_mots(predictor, test, args.out, score_thresh=args.score_thresh)
    row = metrics["car"]
    print("| " + " | ".join(KEYS) + " |\n|" + "---|" * len(KEYS))
    print(
        "| " + " | ".join(f"{row[k]:.1f}" if k != "IDSW" else f"{row[k]:.0f}" for k in KEYS) + " |"
    )
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    raise SystemExit(main())
