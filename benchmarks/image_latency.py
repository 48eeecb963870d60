"""Image instance segmentation latency on CPU: ours vs torchvision Mask R-CNN vs Ultralytics.

Same image(s), same input size (short side 512 and 800), 2 threads, exactly 20 detections sent
through each mask head; median latency, GFLOPs (torch.utils.flop_counter) and attained GFLOP/s.
Prints a table and the ratios the detector issue targets:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/image_latency.py [--sizes 512 800]

Peers: torchvision ``maskrcnn_resnet50_fpn`` (random init, 20 detections) and, when installed
(``.venv/bin/pip install --no-deps -r benchmarks/requirements.txt``), Ultralytics
``yolov8n-seg``/``yolo11n-seg`` from their YAML (random init; timing only). Random init does not
change the cost of a forward pass with a fixed number of detections.
Also reports training throughput (images/s) of our default model at the demo's resolution.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def measure(fn: Callable[[], object], runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_gflops(fn: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() / 1e9


def test_image(size: int) -> np.ndarray:
    """A real photo when ../shared/data is present (else a seeded synthetic scene), resized so
    its short side is ``size``."""
    import cv2

    root = (
        Path(__file__).resolve().parents[2] / "shared/data/davis2016-train-subset/JPEGImages/480p"
    )
    f = root / "elephant" / "00000.jpg"
    if f.is_file():
        img = cv2.imread(str(f))[..., ::-1]
    else:
        img = np.random.default_rng(0).integers(0, 255, (480, 854, 3), dtype=np.uint8)
    h, w = img.shape[:2]
    s = size / min(h, w)
    return np.ascontiguousarray(cv2.resize(img, (round(w * s), round(h * s))))


def ours(name: str, img: np.ndarray, *, bf16: bool, channels_last: bool) -> Callable[[], object]:
    from instseg.data.batch import Batch, collate_images
    from instseg.models.zoo import build_model

    model = build_model(
        name, num_classes=80, pretrained=False, frozen_bn=True, fixed_num_detections=20
    )
    model.eval()
    t = torch.from_numpy(img).permute(2, 0, 1).float()
    images, sizes = collate_images([t])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    batch = Batch(images=images, image_sizes=sizes, orig_sizes=sizes)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext

    def fn() -> object:
        with torch.no_grad(), ctx():
            out = model.predict(batch)
        assert len(out[0]) == 20, f"expected 20 detections, got {len(out[0])}"
        return out

    return fn


def torchvision_maskrcnn(
    img: np.ndarray, *, bf16: bool, channels_last: bool
) -> Callable[[], object]:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    size = min(img.shape[:2])
    model = maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        min_size=size,
        max_size=max(img.shape[:2]),
        box_detections_per_img=20,
        box_score_thresh=0.0,
        box_nms_thresh=1.0,
    ).eval()
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext

    def fn() -> object:
        with torch.no_grad(), ctx():
            out = model([x])
        assert out[0]["masks"].shape[0] == 20, out[0]["masks"].shape
        return out

    return fn


def ultralytics_seg(yaml: str, img: np.ndarray) -> Callable[[], object] | None:
    try:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO
    except ImportError:
        return None
    model = YOLO(yaml)
    threads = torch.get_num_threads()
    net = model.model.eval()
    torch.set_num_threads(threads)  # ultralytics sets torch to 1 thread on import/build
    h, w = img.shape[:2]
    hp, wp = (h + 31) // 32 * 32, (w + 31) // 32 * 32
    x = torch.zeros(1, 3, hp, wp)
    x[0, :, :h, :w] = torch.from_numpy(img).permute(2, 0, 1).float() / 255

    def fn() -> object:
        with torch.no_grad():
            return net(x)  # raw head outputs; NMS + mask assembly excluded (favours the peer)

    return fn


def train_throughput(name: str, *, iters: int = 6, batch_size: int = 8, size: int = 256) -> float:
    from instseg.data.batch import Batch
    from instseg.models.zoo import build_model
    from instseg.structures import Instances

    model = build_model(name, num_classes=8, pretrained=False, frozen_bn=True).train()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, size, size, generator=g) * 255
    targets = []
    for _ in range(batch_size):
        masks = torch.zeros(3, size, size, dtype=torch.bool)
        boxes = torch.tensor([[20.0, 30, 120, 150], [90, 60, 200, 220], [150, 10, 240, 90]])
        for j, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[j, y0:y1, x0:x1] = True
        targets.append(
            Instances(
                image_size=(size, size), boxes=boxes, labels=torch.tensor([0, 1, 2]), masks=masks
            )
        )
    batch = Batch(images=images, image_sizes=[(size, size)] * batch_size, targets=targets)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = sum(model.loss(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    sec = measure(step, runs=iters, warmup=1)
    return batch_size / sec


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 800])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--no-train", action="store_true", help="skip the training throughput measurement"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        img = test_image(size)
        cands: list[tuple[str, Callable[[], object] | None]] = [
            (
                "ours effl0-fcos (bf16, channels_last)",
                ours("effl0_fcos_maskrcnn", img, bf16=True, channels_last=True),
            ),
            (
                "ours effl0-fcos (fp32)",
                ours("effl0_fcos_maskrcnn", img, bf16=False, channels_last=False),
            ),
            (
                "ours r50-fcos (bf16, channels_last)",
                ours("r50_fcos_maskrcnn", img, bf16=True, channels_last=True),
            ),
            (
                "torchvision maskrcnn_r50_fpn (fp32)",
                torchvision_maskrcnn(img, bf16=False, channels_last=False),
            ),
            (
                "torchvision maskrcnn_r50_fpn (bf16)",
                torchvision_maskrcnn(img, bf16=True, channels_last=True),
            ),
            ("ultralytics yolov8n-seg (fp32)", ultralytics_seg("yolov8n-seg.yaml", img)),
            ("ultralytics yolo11n-seg (fp32)", ultralytics_seg("yolo11n-seg.yaml", img)),
        ]
        torch.set_num_threads(args.threads)
        for label, fn in cands:
            if fn is None:
                print(f"skip {label}: not installed")
                continue
            torch.set_num_threads(args.threads)
            sec = measure(fn, args.runs)
            gf = count_gflops(fn)
            rows.append((size, label, sec * 1000, gf, gf / sec))
            print(
                f"{size:4d}  {label:42s} {sec * 1000:9.1f} ms  {gf:7.1f} GFLOP  "
                f"{gf / sec:6.1f} GFLOP/s",
                flush=True,
            )
    print("\n| size | model | median ms | GFLOPs | GFLOP/s |\n|---|---|---:|---:|---:|")
    for size, label, ms, gf, gfs in rows:
        print(f"| {size} | {label} | {ms:.1f} | {gf:.1f} | {gfs:.1f} |")
    lat = {(s, lab): ms for s, lab, ms, _, _ in rows}
    fast = lat.get((512, "ours effl0-fcos (bf16, channels_last)"))
    if fast:
        for peer in (
            "torchvision maskrcnn_r50_fpn (fp32)",
            "torchvision maskrcnn_r50_fpn (bf16)",
            "ultralytics yolov8n-seg (fp32)",
        ):
            if (512, peer) in lat:
                print(f"ratio at 512: {peer} / ours-effl0 = {lat[(512, peer)] / fast:.2f}x")
        print(
            "targets: >= 5x vs torchvision Mask R-CNN; ours <= 1.5x yolov8n-seg "
            "(i.e. yolov8n/ours ratio >= 0.67)"
        )
    if not args.no_train:
        ips = train_throughput("effl0_fcos_maskrcnn")
        print(f"training throughput effl0-fcos, 256 px, batch 8, bf16: {ips:.1f} images/s")


if __name__ == "__main__":
    main()
