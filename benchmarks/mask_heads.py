"""Mask-head benchmark on cached, frozen RoI features (issue 14; survey Tables 3.1-3.3).

Every head is freshly initialised and trained on the same cached RoI features (the shipped
objects model's backbone + FPN, frozen, fp32), the same RoI batches, the same budget; the
primary metric, fixed before running, is the mean GT-box mask IoU on instances more than 30%
occluded. See :mod:`instseg.recipes.head_benchmark` for the protocol.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/mask_heads.py \
        --out runs/bench_heads [--heads maskrcnn maskrcnn_8conv bcnet ...] [--seeds 0 1 2] \
        [--data-seed 0] [--iters 500] [--train-images 1200] [--test-images 300]

Writes OUT/report.json (every number, per seed), OUT/per_instance.npz (per-instance IoU etc.
of every head and seed, for re-analysis) and OUT/report.md (the tables), and prints the
tables. A fresh ``--data-seed`` draws fresh scenes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from instseg.inference.loading import load_trained_model  # noqa: E402
from instseg.recipes.head_benchmark import (  # noqa: E402
    HEADS,
    HeadBenchConfig,
    format_report,
    run_benchmark,
)
from instseg.utils.io import atomic_write, atomic_write_json, atomic_write_text  # noqa: E402
from instseg.utils.precision import cpu_name  # noqa: E402

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "src/instseg/weights/objects_default.pt"


def main(argv: list[str] | None = None) -> int:
    d = HeadBenchConfig(weights=str(DEFAULT_WEIGHTS))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=d.weights, help="image model giving the frozen features")
    p.add_argument("--out", required=True, help="output folder (report.json, report.md)")
    p.add_argument("--heads", nargs="+", default=list(d.heads), choices=sorted(HEADS))
    p.add_argument("--baseline", default=d.baseline, choices=sorted(HEADS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(d.seeds))
    p.add_argument("--data-seed", type=int, default=d.data_seed)
    p.add_argument("--train-images", type=int, default=d.train_images)
    p.add_argument("--test-images", type=int, default=d.test_images)
    p.add_argument("--iters", type=int, default=d.iters)
    p.add_argument("--roi-batch", type=int, default=d.roi_batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--occlusion", type=float, default=d.occlusion)
    p.add_argument("--same-class-overlap", type=float, default=d.same_class_overlap)
    p.add_argument(
        "--mask-target",
        default=d.mask_target,
        choices=["visible", "amodal"],
        help="amodal: heads learn and are scored on amodal masks in amodal boxes (Tables 3.5-3.6)",
    )
    p.add_argument(
        "--oracle-images",
        type=int,
        default=0,
        help="add this many training scenes of the held-out sequences (the oracle rows of the "
        "partially-supervised protocol: heads see the unseen objects' masks)",
    )
    p.add_argument(
        "--loss-weight",
        action="append",
        default=[],
        metavar="TERM=W",
        help="multiply a loss term of every head that has it (e.g. affinity=0.25; repeatable); "
        "unnamed terms keep 1.0",
    )
    p.add_argument(
        "--cache",
        default="runs/bench_heads_cache",
        help="folder of cached RoI sets, reused by runs with the same data settings ('' = none)",
    )
    p.add_argument("--no-davis", action="store_true", help="procedural shapes only")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = {}
    for item in args.loss_weight:
        name, sep, value = item.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            p.error(f"--loss-weight expects TERM=W, got {item!r}")
    if args.baseline not in args.heads:
        p.error(f"--baseline {args.baseline} must be one of --heads")
    try:
        cfg = HeadBenchConfig(
            weights=args.weights,
            heads=tuple(args.heads),
            baseline=args.baseline,
            seeds=tuple(args.seeds),
            data_seed=args.data_seed,
            train_images=args.train_images,
            test_images=args.test_images,
            iters=args.iters,
            roi_batch=args.roi_batch,
            lr=args.lr,
            occlusion=args.occlusion,
            same_class_overlap=args.same_class_overlap,
            davis=not args.no_davis,
            mask_target=args.mask_target,
            oracle_images=args.oracle_images,
            loss_weights=weights,
        )
    except ValueError as e:
        p.error(str(e))
    model, _ = load_trained_model(cfg.weights)
    model = model.float().to(memory_format=torch.channels_last)
    report = run_benchmark(cfg, model=model, cache_dir=args.cache or None)
    report["cpu"] = cpu_name()
    report["threads"] = torch.get_num_threads()
    report["command"] = " ".join(["benchmarks/mask_heads.py", *(argv or sys.argv[1:])])
    out = Path(args.out)
    arrays = report.pop("arrays")

    def write_npz(path: Path) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(out / "per_instance.npz", write_npz)
    atomic_write_json(out / "report.json", report, indent=1)
    text = (
        f"`{report['command']}`; CPU {report['cpu']}, {report['threads']} threads, fp32; "
        f"{report['seconds'] / 60:.1f} min in all.\n\n" + format_report(report) + "\n"
    )
    atomic_write_text(out / "report.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
