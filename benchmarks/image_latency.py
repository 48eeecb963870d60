"""Image instance segmentation latency on CPU: ours vs torchvision Mask R-CNN vs Ultralytics,
in the precision this CPU resolves to (``amp=auto``) and in fp32, measured in one run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/image_latency.py [--sizes 512] [--runs 10]

Prints the CPU (model name, vector ISA, native bf16 as torch reports it), then median latencies:

- **end to end**: an RGB uint8 photo in, instances at the photo's size out.
  Ours: :class:`instseg.inference.ImagePredictor` (resize, normalise, detector, mask head, mask
  pasting), with ``backend="torch"`` in each precision and with ``backend="onnxruntime"`` (fp32,
  what the predictor runs on a CPU by default). Mask R-CNN: torchvision's ``model([x])`` (its
  transform, RPN, heads, paste).
  yolov8n-seg: Ultralytics ``YOLO.predict`` (letterbox, network, NMS, mask assembly), once with its
  default low-resolution masks and once with ``retina_masks=True`` (masks at the photo's size,
  as ours and Mask R-CNN return them).
- **network only**: the model's forward on a prepared tensor (ours: ``model.predict`` on a
  ``Batch``; yolov8n-seg: ``model.model(x)``, no NMS or mask assembly).
- **ONNX Runtime**: our network exported as ``instseg export --format onnx`` does it (no mask
  pasting), run by onnxruntime in fp32 (its own kernels: the ISA caps do not apply to it).
- **fast paths in fp32**: channels_last on/off and folded vs unfolded frozen BatchNorm for our
  network, and the FCOS/FPN width, so the defaults chosen for bf16 are checked on fp32 too.

Every model is random-init (weights do not change the cost of a forward pass) and sends exactly
20 detections through its mask stage: ours and Mask R-CNN by construction
(``fixed_num_detections`` / score threshold 0, NMS off); yolov8n-seg by a confidence threshold set
once per image just below the score of its 40th detection after NMS (``max_det=20``). Input sizes
are the same: the photo's short side resized to ``--sizes`` (its long side then about 1.78x), and
yolov8n-seg's ``imgsz`` is that long side rounded up to a multiple of 32 (ours pads to 32 as well;
Ultralytics letterboxes to a stride-32 rectangle).
Ultralytics sets torch to 1 thread when it loads; the thread count is put back before timing.
Peers: ``.venv/bin/pip install --no-deps -r benchmarks/requirements.txt`` (skipped if absent).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from instseg.utils.precision import autocast, cpu_bf16_native, cpu_name, resolve_amp  # noqa: E402

NUM_DET = 20


def measure(fn: Callable[[], object], runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def test_image(size: int) -> np.ndarray:
    """A real photo when ../shared/data is present (else seeded noise), short side ``size``."""
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


ORT_E2E = "ours e2e (ImagePredictor, onnxruntime)"


def _random_weights_file(tmp: Path, name: str = "effl0_fcos_maskrcnn", **kw: object) -> Path:
    """A weights file of a random-init zoo model (80 classes), readable by ImagePredictor."""
    from instseg.engine.checkpoint import save_weights
    from instseg.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model(name, num_classes=80, pretrained=False, frozen_bn=True, **kw)
    path = tmp / f"{name}.pt"
    meta = {
        "task": "image",
        "model": {"name": name, "pretrained": False, "frozen_bn": True},
        "num_classes": 80,
        "category_ids": list(range(1, 81)),
        "class_names": [f"c{i}" for i in range(80)],
    }
    save_weights(model, path, meta=meta)
    return path


def ours_end_to_end(
    weights: Path, img: np.ndarray, *, amp: str, channels_last: bool, backend: str = "torch"
) -> Callable[[], object]:
    from instseg.inference.predictor import ImagePredictor

    short, long = min(img.shape[:2]), max(img.shape[:2])
    pred = ImagePredictor(
        weights,
        device="cpu",
        min_size=short,
        max_size=long,
        amp=amp,
        channels_last=channels_last,
        backend=backend,
    )
    assert pred.backend == backend, (pred.backend, backend)
    pred.model.fixed_num_detections = NUM_DET

    def fn() -> object:
        out = pred(img)
        assert len(out) == NUM_DET, f"expected {NUM_DET} detections, got {len(out)}"
        return out

    return fn


def ours_network(
    img: np.ndarray, *, amp: str, channels_last: bool, **build_kw: object
) -> Callable[[], object]:
    from instseg.models.zoo import build_model
    from instseg.structures.batch import Batch, collate_images

    torch.manual_seed(0)
    kw = {"frozen_bn": True, **build_kw}
    model = build_model(
        "effl0_fcos_maskrcnn",
        num_classes=80,
        pretrained=False,
        fixed_num_detections=NUM_DET,
        **kw,
    ).eval()
    t = torch.from_numpy(img).permute(2, 0, 1).float()
    images, sizes = collate_images([t])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    batch = Batch(images=images, image_sizes=sizes, orig_sizes=sizes)

    def fn() -> object:
        with torch.no_grad(), autocast(amp, "cpu"):
            return model.predict(batch)

    return fn


def ours_onnxruntime(img: np.ndarray, tmp: Path, threads: int) -> Callable[[], object] | None:
    """Our network exported to ONNX (``instseg export``'s graph: detector + mask head, 20
    detections, 28x28 mask probabilities; no pasting) run by ONNX Runtime in fp32. ORT uses its
    own kernels: the oneDNN/ATen ISA caps do not apply to it."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from instseg.inference.export import export_model
    from instseg.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model(
        "effl0_fcos_maskrcnn",
        num_classes=80,
        pretrained=False,
        frozen_bn=True,
        fixed_num_detections=NUM_DET,
    ).eval()
    h, w = img.shape[:2]
    hp, wp = (h + 31) // 32 * 32, (w + 31) // 32 * 32
    path = export_model(model, tmp / "ours.onnx", fmt="onnx", image_size=(hp, wp))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.zeros((1, 3, hp, wp), np.float32)
    x[0, :, :h, :w] = img.transpose(2, 0, 1)

    def fn() -> object:
        return sess.run(None, {"images": x})

    return fn


def torchvision_maskrcnn(img: np.ndarray, *, amp: str) -> Callable[[], object]:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        min_size=min(img.shape[:2]),
        max_size=max(img.shape[:2]),
        box_detections_per_img=NUM_DET,
        box_score_thresh=0.0,
        box_nms_thresh=1.0,
    ).eval()

    def fn() -> object:
        x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
        with torch.no_grad(), autocast(amp, "cpu"):
            out = model([x])
        assert out[0]["masks"].shape[0] == NUM_DET, out[0]["masks"].shape
        return out

    return fn


def yolo_seg(img: np.ndarray, threads: int) -> dict[str, Callable[[], object]] | None:
    """{'e2e': predict, 'e2e retina': predict with full-size masks, 'net': raw network}."""
    try:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO
    except ImportError:
        return None
    torch.manual_seed(0)
    model = YOLO("yolov8n-seg.yaml")
    torch.set_num_threads(threads)  # Ultralytics sets torch to 1 thread
    imgsz = (max(img.shape[:2]) + 31) // 32 * 32  # our collate pads to a multiple of 32 too
    model.predict(img, imgsz=imgsz, verbose=False)  # builds the predictor
    torch.set_num_threads(threads)
    net = model.model.eval()
    h, w = img.shape[:2]
    hp, wp = (h + 31) // 32 * 32, (w + 31) // 32 * 32
    x = torch.zeros(1, 3, hp, wp)
    x[0, :, :h, :w] = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    # calibrate the confidence threshold with Ultralytics' own pre-processing: the score of
    # the 40th detection surviving NMS at conf 0 (so >= 40 survive at that threshold)
    r = model.predict(img, imgsz=imgsz, conf=0.0, max_det=300, verbose=False)[0]
    scores = r.boxes.conf.sort(descending=True).values
    conf = float(scores[min(2 * NUM_DET, len(scores)) - 1]) * 0.999
    torch.set_num_threads(threads)

    def e2e(retina: bool) -> Callable[[], object]:
        def fn() -> object:
            r = model.predict(
                img, imgsz=imgsz, conf=conf, max_det=NUM_DET, retina_masks=retina, verbose=False
            )
            assert r[0].masks is not None and len(r[0].masks) == NUM_DET, len(r[0].boxes)
            return r

        return fn

    def raw() -> object:
        with torch.no_grad():
            return net(x)

    return {"e2e": e2e(False), "e2e retina": e2e(True), "net": raw}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[512])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-fast-paths", action="store_true", help="skip the fp32 fast-path table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    auto = resolve_amp("auto", "cpu")
    precisions = ["auto", "none"] if auto != "none" else ["none"]
    label = {"auto": f"auto={'fp32' if auto == 'none' else auto}", "none": "fp32"}
    print(
        f"CPU: {cpu_name()}; native bf16 (torch): {cpu_bf16_native()}; amp=auto -> "
        f"{label['auto']}; torch {torch.__version__}; {args.threads} threads; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}",
        flush=True,
    )
    lat: dict[tuple[int, str, str], float] = {}

    def run(size: int, name: str, prec: str, fn: Callable[[], object] | None) -> None:
        if fn is None:
            print(f"skip {name}: not installed")
            return
        torch.set_num_threads(args.threads)
        ms = measure(fn, args.runs) * 1000
        lat[(size, name, prec)] = ms
        print(f"{size:4d}  {name:44s} {label.get(prec, prec):10s} {ms:8.1f} ms", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        weights = _random_weights_file(Path(tmp))
        for size in args.sizes:
            img = test_image(size)
            for prec in precisions:
                cl = True  # channels_last: the predictor's CPU default (see the fast-path rows)
                run(size, "ours e2e (ImagePredictor, torch)", prec,
                    ours_end_to_end(weights, img, amp=prec, channels_last=cl))  # fmt: skip
                run(size, "ours network", prec, ours_network(img, amp=prec, channels_last=cl))
                run(size, "torchvision maskrcnn_r50_fpn e2e", prec,
                    torchvision_maskrcnn(img, amp=prec))  # fmt: skip
            yolo = yolo_seg(img, args.threads)
            for key in ("e2e", "e2e retina", "net"):
                run(size, f"yolov8n-seg {key}", "none", yolo[key] if yolo else None)
            # last: ORT's thread pool must not compete with the other rows
            run(size, "ours network via onnxruntime (no paste)", "none",
                ours_onnxruntime(img, Path(tmp), args.threads))  # fmt: skip
            run(size, ORT_E2E, "none", ours_end_to_end(
                weights, img, amp="none", channels_last=False, backend="onnxruntime"))  # fmt: skip
            if not args.no_fast_paths:
                print("fast paths, fp32 network only:")
                for cl in (False, True):
                    for fold in (True, False):
                        fn = ours_network(img, amp="none", channels_last=cl, frozen_bn=fold)
                        run(size, f"ours network channels_last={cl} folded_bn={fold}", "none", fn)
                for ch, convs in ((64, 2), (128, 2), (64, 4), (256, 4)):
                    run(size, f"ours network fpn/head {ch} ch x {convs} convs", "none",
                        ours_network(img, amp="none", channels_last=False, fpn_channels=ch,
                                     head_convs=convs))  # fmt: skip
    print("\nratios (peer ms / ours ms; > 1 means ours is faster):")
    print("| size | peer | ours | " + " | ".join(label[p] for p in precisions) + " |")
    print("|---|---|---|" + "---:|" * len(precisions))
    torch_e2e = "ours e2e (ImagePredictor, torch)"
    pairs = [
        ("torchvision maskrcnn_r50_fpn e2e", torch_e2e, True),
        ("yolov8n-seg e2e", torch_e2e, False),
        ("yolov8n-seg e2e retina", torch_e2e, False),
        ("yolov8n-seg net", "ours network", False),
    ]
    # the predictor's CPU default (backend auto): ONNX Runtime in fp32, one value per row
    ort_pairs = [
        ("torchvision maskrcnn_r50_fpn e2e", ORT_E2E),
        ("yolov8n-seg e2e", ORT_E2E),
        ("yolov8n-seg e2e retina", ORT_E2E),
        ("yolov8n-seg net", "ours network via onnxruntime (no paste)"),
    ]
    for size in args.sizes:
        for peer, ours, same_prec in pairs:
            cells = []
            for prec in precisions:
                pk = (size, peer, prec if same_prec else "none")
                ok = (size, ours, prec)
                cells.append(f"{lat[pk] / lat[ok]:.2f}x" if pk in lat and ok in lat else "-")
            print(f"| {size} | {peer} | {ours} | " + " | ".join(cells) + " |")
        for peer, ours in ort_pairs:
            ok = (size, ours, "none")  # ONNX Runtime runs fp32 in every column
            same_prec = peer.startswith("torchvision")
            keys = [(size, peer, prec if same_prec else "none") for prec in precisions]
            cells = [f"{lat[pk] / lat[ok]:.2f}x" if pk in lat and ok in lat else "-" for pk in keys]
            print(f"| {size} | {peer} | {ours} | " + " | ".join(cells) + " |")
    print(
        "targets on a CPU without native bf16 (fp32 column): >= 5x vs Mask R-CNN R50-FPN end to "
        "end; >= 1.0x vs yolov8n-seg end to end (no slower). Peers run in fp32 except Mask R-CNN, "
        "which runs in each column's precision. The onnxruntime rows are what ImagePredictor and "
        "`instseg predict` run on a CPU by default (backend auto); the torch rows: backend torch."
    )


if __name__ == "__main__":
    main()
