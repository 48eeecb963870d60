"""Train PCAN (video recipe) and optionally install it as the shipped default model.

``instseg train configs/pcan_synthetic.yaml [key=value ...]`` trains the same way (the config's
``task: video`` picks the video recipe); this script adds ``--install`` and ``--smoke``.

The shipped default (``src/instseg/weights/pcan_default.pt``, used by ``instseg track`` without
``--weights``) is produced by exactly this command (a long CPU job: hours on 2 cores)::

    python scripts/train_pcan.py --config configs/pcan_synthetic.yaml \\
        model.image_weights=src/instseg/weights/demo_image.pt --install

then fill in ``src/instseg/weights/pcan_default.md`` from ``runs/pcan/metrics.json``.
(Drop ``model.image_weights=...`` when no trained image model is available; the segmenter then
starts from ImageNet only and needs more iterations.) Resumable: rerun with ``--resume``.

Smoke test (seconds)::

    python scripts/train_pcan.py --config configs/pcan_synthetic.yaml --smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from instseg.config import load_config
from instseg.recipes.video import train_video
from instseg.recipes.video_config import SMOKE_OVERRIDES, VideoTrainConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "src" / "instseg" / "weights" / "pcan_default.pt"
SMOKE = [*SMOKE_OVERRIDES, "out_dir=runs/pcan_smoke"]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=str(REPO / "configs" / "pcan_synthetic.yaml"))
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--install", action="store_true", help=f"copy model.pt to {DEFAULT}")
    p.add_argument("--smoke", action="store_true", help="tiny 3-iteration run (checks the setup)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_config(VideoTrainConfig, args.config, (SMOKE if args.smoke else []) + args.overrides)
    metrics = train_video(cfg, resume=args.resume)
    print(json.dumps(metrics, indent=2))
    if args.install and not args.smoke:
        DEFAULT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(cfg.out_dir) / "model.pt", DEFAULT)
        print(f"installed {DEFAULT}; now fill in {DEFAULT.with_suffix('.md')}")


if __name__ == "__main__":
    main()
