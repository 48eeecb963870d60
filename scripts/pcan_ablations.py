"""PCAN ablations in the layout of survey Tables 5.3, 5.6 and 5.7, on the held-out synthetic
videos of a training config (YouTube-VIS AP / AP50 / AP75 / AR1 / AR10, online tracking).

    python scripts/pcan_ablations.py --weights runs/pcan/model.pt \\
        --config configs/pcan_synthetic.yaml --out runs/pcan_ablations

All rows use ONE trained model and change an inference-time setting (a documented choice: the
paper trains each row; on 2 CPU cores one model is what the budget allows, and every setting
below is a parameter of the online procedure, not of the learned weights):

- Table 5.3, temporal length: the PCAM memory holds the prototypes of the last T frames,
  T in 1, 2, 4, 8 (``PCAN.memory_length``);
- Table 5.6, prototype number: K GMM-EM prototypes per frame and level, K in 0 (no
  cross-frame attention), 1, 5, 30 (``PrototypicalCrossAttention.num_prototypes``);
- Table 5.7, instance prototype update (Eq. 5.8): off (prototypes of the current detection
  only), initial (the track's first prototypes), momentum 0.2, momentum 0.5.

Results go to ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from instseg.config import load_config
from instseg.inference.video_predictor import load_video_model
from instseg.models.video.pcan import PCAN
from instseg.recipes.video import evaluate_video, load_test_split
from instseg.recipes.video_config import VideoTrainConfig

KEYS = ("AP", "AP50", "AP75", "AR1", "AR10")


@contextmanager
def setting(model: PCAN, **kw: Any) -> Iterator[None]:
    """Temporarily set ``memory_length``, ``num_prototypes`` (every PCAM level),
    ``instance_update`` and ``instance_momentum``."""
    levels = list(model.pcam.levels.values())
    saved = (
        model.memory_length,
        [m.num_prototypes for m in levels],
        model.instance_update,
        model.instance_momentum,
    )
    try:
        if "memory_length" in kw:
            model.memory_length = kw["memory_length"]
        if "num_prototypes" in kw:
            for m in levels:
                m.num_prototypes = kw["num_prototypes"]
        if "instance_update" in kw:
            model.instance_update = kw["instance_update"]
        if "instance_momentum" in kw:
            model.instance_momentum = kw["instance_momentum"]
        yield
    finally:
        model.memory_length = saved[0]
        for m, k in zip(levels, saved[1], strict=True):
            m.num_prototypes = k
        model.instance_update, model.instance_momentum = saved[2], saved[3]


TABLES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "Table 5.3: temporal length T of the PCAM memory": [
        (f"T = {t}", {"memory_length": t}) for t in (1, 2, 4, 8)
    ],
    "Table 5.6: prototypes per frame (K)": [
        (f"K = {k}" + (" (no cross-frame attention)" if k == 0 else ""), {"num_prototypes": k})
        for k in (0, 1, 5, 30)
    ],
    "Table 5.7: instance prototype update (Eq. 5.8)": [
        ("off (current frame only)", {"instance_update": "off"}),
        ("initial prototypes only", {"instance_update": "initial"}),
        ("momentum 0.2", {"instance_update": "momentum", "instance_momentum": 0.2}),
        ("momentum 0.5", {"instance_update": "momentum", "instance_momentum": 0.5}),
    ],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True, help="trained PCAN model.pt")
    p.add_argument("--config", required=True, help="the training config (its test split)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.cache_dir=...")
    p.add_argument("--out", type=Path, default=Path("runs/pcan_ablations"))
    p.add_argument("--videos", type=int, default=0, help="test videos (0: all)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(VideoTrainConfig, args.config, args.overrides)
    try:
        splits, test = load_test_split(cfg)
    except ValueError as e:
        raise SystemExit(f"{args.config}: {e}") from None
    model, meta = load_video_model(args.weights)
    args.out.mkdir(parents=True, exist_ok=True)

    def run(kw: dict[str, Any]) -> dict[str, Any]:
        with setting(model, **kw):
            return evaluate_video(
                model, test, category_ids=list(meta.category_ids), min_size=cfg.data.test_min_size,
                max_size=cfg.data.max_size, amp=cfg.solver.amp, max_videos=args.videos or None,
            )  # fmt: skip

    results: dict[str, list[dict[str, Any]]] = {}
    text = [
        f"weights: {args.weights}; {len(test.videos[: args.videos or None])} held-out videos of "
        f"{splits.test_json}\n"
    ]
    for title, rows in TABLES.items():
        lines = [f"### {title}", "", "| setting | " + " | ".join(KEYS) + " |",
                 "|---" * (len(KEYS) + 1) + "|"]  # fmt: skip
        results[title] = []
        for label, kw in rows:
            m = run(kw)
            results[title].append({"setting": label, "overrides": kw, "metrics": m})
            lines.append(f"| {label} | " + " | ".join(_fmt(m.get(k)) for k in KEYS) + " |")
            print(lines[-1], flush=True)
        text.append("\n".join(lines) + "\n")
    report = "\n".join(text)
    print(report)
    (args.out / "results.md").write_text(report)
    (args.out / "results.json").write_text(
        json.dumps(
            {"weights": str(args.weights), "config": args.config, "tables": results},
            indent=1,
            default=float,
        )  # fmt: skip
    )
    return 0


def _fmt(x: Any) -> str:
    return "-" if not isinstance(x, int | float) else f"{x:.1f}"


if __name__ == "__main__":
    raise SystemExit(main())
