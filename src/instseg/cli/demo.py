"""``instseg demo``: the main job on the built-in default.

Generates the synthetic occlusion scenes (train + held-out split), trains the fast
EfficientNet-Lite0-FCOS + Mask R-CNN-head model on CPU (``solver.amp=auto``: bf16 where the CPU
has native bf16, fp32 elsewhere), evaluates COCO AP on the held-out split, and writes ``--out``
with ``model.pt``, ``metrics.json``, ``curves.png`` (loss and AP) and overlay pictures in
``vis/``, and ends with ``report.html`` (:mod:`instseg.reporting`: config, curves, metric tables,
predictions). ``instseg predict --weights OUT/model.pt`` then works.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from instseg.config import apply_overrides


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default: config)")
    p.add_argument("--num-train", type=int, default=None, help="synthetic training images")
    p.add_argument("--num-test", type=int, default=None, help="synthetic held-out images")
    p.add_argument("--config", default=None, help="YAML config instead of the built-in demo config")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the config")


def demo_config_path() -> Path:
    return Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def run(args: argparse.Namespace) -> int:
    from instseg.config import load_config
    from instseg.recipes.image import resolve_device, train
    from instseg.recipes.image_config import ImageTrainConfig
    from instseg.utils.precision import precision_info

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_config(ImageTrainConfig, args.config or demo_config_path(), args.overrides)
    extra = [f"out_dir={args.out}"]
    if args.iters is not None:
        extra.append(f"solver.max_iters={args.iters}")
        extra.append(f"solver.warmup_iters={min(cfg.solver.warmup_iters, max(args.iters // 5, 0))}")
    if args.num_train is not None:
        extra.append(f"data.synthetic.num_train={args.num_train}")
    if args.num_test is not None:
        extra.append(f"data.synthetic.num_test={args.num_test}")
    cfg = apply_overrides(cfg, extra)
    t0 = time.time()
    metrics = train(cfg, resume=args.resume, progress=not args.no_progress)
    train_time = time.time() - t0
    out = Path(cfg.out_dir)
    write_curves(out)
    write_overlays(out, cfg)
    segm = metrics.get("segm", {})
    bbox = metrics.get("bbox", {})
    summary = {
        "segm_AP": segm.get("AP"),
        "segm_AP50": segm.get("AP50"),
        "bbox_AP": bbox.get("AP"),
        "minutes": round(train_time / 60, 2),
        "precision": precision_info(cfg.solver.amp, resolve_device(cfg.device))["resolved"],
        "out": str(out),
    }
    print(json.dumps(summary, indent=2))
    print(
        f"next: instseg predict --weights {out / 'model.pt'} "
        "--source <image|folder|video> --save-vis"
    )
    from instseg.reporting import build_report

    print(f"report: {build_report(out)}")
    return 0


def write_curves(out: Path) -> None:
    """Plot total loss and eval AP from ``metrics.jsonl`` into ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log_file = out / "metrics.jsonl"
    if not log_file.is_file():
        return
    its, losses, ev_its, aps = [], [], [], []
    for line in log_file.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "total_loss" in rec:
            its.append(rec["iter"])
            losses.append(rec["total_loss"])
        ap = (
            rec.get("segm", {}).get("AP")
            if isinstance(rec.get("segm"), dict)
            else rec.get("segm/AP")
        )
        if ap is not None:
            ev_its.append(rec["iter"])
            aps.append(ap)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(its, losses)
    ax[0].set_xlabel("iteration")
    ax[0].set_ylabel("total loss")
    ax[0].set_yscale("log")
    ax[1].plot(ev_its, aps, "o-")
    ax[1].set_xlabel("iteration")
    ax[1].set_ylabel("segm AP (held-out)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)


def write_overlays(out: Path, cfg, num: int = 6) -> None:  # noqa: ANN001
    """Overlay pictures of the first held-out images in ``out/vis``."""
    import cv2

    from instseg.inference.predictor import ImagePredictor
    from instseg.inference.visualize import draw_instances
    from instseg.recipes.image import prepare_data
    from instseg.utils.image import read_image
    from instseg.utils.io import read_json

    splits = prepare_data(cfg.data, out)
    predictor = ImagePredictor(out / "model.pt", device="cpu")
    (out / "vis").mkdir(exist_ok=True)
    for im in read_json(splits.test_json)["images"][:num]:
        image = read_image(splits.test_root / im["file_name"])
        inst = predictor(image)
        vis = draw_instances(image, inst, class_names=predictor.class_names, score_thresh=0.4)
        cv2.imwrite(str(out / "vis" / f"{Path(im['file_name']).stem}.jpg"), vis[..., ::-1])
