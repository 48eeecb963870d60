"""PCAN weights files side by side on the held-out synthetic videos of a training config:
YouTube-VIS AP of online tracking, per-frame mask AP on all / corrupted / patched frames (when
the split was made with video effects), each also with the temporal memory switched off.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/pcan_compare.py --config configs/pcan_objects.yaml \\
        --weights src/instseg/weights/pcan_default.pt runs/pcan_objects/model.pt \\
        --out runs/pcan_compare

"memory off" is an inference-time switch of the same weights (the frame-level PCAM returns
the current features unchanged and the temporal segmentation module is skipped; the detector,
mask head, track head and tracker are those of the file): it shows what the memory adds to
that model, it is not a separately trained image-only model. MOTS metrics (sMOTSA, HOTA):
``scripts/pcan_mots.py``. Writes ``OUT/results.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from instseg.config import load_config
from instseg.inference.video_predictor import load_video_model
from instseg.models.video.cross_attention import MultiLevelPCAM
from instseg.models.video.pcan import PCAN
from instseg.recipes.video import corrupted_subsets, evaluate_video, load_test_split
from instseg.recipes.video_config import VideoTrainConfig


@contextmanager
def memory_off(model: PCAN) -> Iterator[None]:
    """Temporarily bypass the frame-level PCAM and the temporal segmentation module."""
    pcam, tsm = model.pcam, model.tsm
    try:
        # a PCAM without levels passes the features unchanged (as in pcan_fast_image)
        model.pcam, model.tsm = MultiLevelPCAM(per_level={}), None
        yield
    finally:
        model.pcam, model.tsm = pcam, tsm


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--weights", nargs="+", required=True)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", type=Path, default=Path("runs/pcan_compare"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(VideoTrainConfig, args.config, args.overrides)
    try:
        splits, test = load_test_split(cfg)
    except ValueError as e:
        raise SystemExit(f"{args.config}: {e}") from None
    subsets = corrupted_subsets(splits)
    rows: dict[str, Any] = {}
    for w in args.weights:
        model, meta = load_video_model(w, device="cpu")
        model = model.float().eval()
        for mode in ("memory on", "memory off"):
            name = f"{w} ({mode})"
            ctx = memory_off(model) if mode == "memory off" else nullcontext()
            with ctx, torch.no_grad():
                m = evaluate_video(
                    model, test, category_ids=list(test.categories),
                    min_size=cfg.data.test_min_size, max_size=cfg.data.max_size, amp="none",
                    tracker=cfg.tracker,
                    frame_subsets=subsets,
                )  # fmt: skip
            rows[name] = m
            frames = m.get("frames", {})
            print(
                f"{name}: VIS AP {m['AP']:.1f} AP50 {m['AP50']:.1f} AR10 {m['AR10']:.1f}; "
                + ", ".join(f"frame AP {k} {v['AP']:.1f}" for k, v in frames.items())
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=float))
    keys = sorted({k for m in rows.values() for k in m.get("frames", {})})
    print(
        "\n| weights | VIS AP | AP50 | AR10 | " + " | ".join(f"frame AP {k}" for k in keys) + " |"
    )
    print("|---|---:|---:|---:|" + "---:|" * len(keys))
    for name, m in rows.items():
        fr = m.get("frames", {})
        cells = [f"{fr[k]['AP']:.1f}" if k in fr else "-" for k in keys]
        print(
            f"| {name} | {m['AP']:.1f} | {m['AP50']:.1f} | {m['AR10']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
