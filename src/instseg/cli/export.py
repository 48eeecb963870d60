"""``instseg export --weights W --format onnx|torchscript [--size H W] [--out FILE]``.

Exports the whole trained image model for a fixed input size with exactly ``--detections`` K
outputs (see :mod:`instseg.inference.export` for the graph's inputs and outputs) and checks the
exported graph against eager PyTorch on a fresh input before reporting success.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="model.pt written by train/demo")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="input size (default: test_min_size x test_min_size from the weights)",
    )
    p.add_argument("--detections", type=int, default=100, help="fixed number of outputs K")
    p.add_argument("--out", default=None, help="output file (default: next to the weights)")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from instseg.inference.export import eager_outputs, export_model
    from instseg.inference.loading import load_trained_model

    model, meta = load_trained_model(args.weights, fixed_num_detections=args.detections)
    size = tuple(args.size) if args.size else (int(meta.test_min_size or 256),) * 2
    suffix = ".onnx" if args.format == "onnx" else ".torchscript.pt"
    out = Path(args.out) if args.out else Path(args.weights).with_suffix(suffix)
    export_model(model, out, fmt=args.format, image_size=size)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1)) * 255
    ref = eager_outputs(model, x)
    if args.format == "torchscript":
        got = [t.detach().numpy() for t in torch.jit.load(str(out))(x)]
    else:
        import onnxruntime as ort

        got = ort.InferenceSession(str(out)).run(None, {"images": x.numpy()})
    err = max(float(np.abs(r.float().numpy() - g).max()) for r, g in zip(ref, got, strict=True))
    print(
        f"wrote {out} ({args.format}, input 1x3x{size[0]}x{size[1]}, {args.detections} "
        f"detections); max |exported - eager| = {err:.2e}"
    )
    return 0 if err < 1e-3 else 1
