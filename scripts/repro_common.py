"""Shared helpers of scripts/repro_bcnet.py and scripts/repro_cpmask.py.

Each (variant, seed) is one call of :func:`instseg.recipes.image.train` with its own out dir
``OUT/<variant>/seed<k>``: a run with ``metrics.json`` is finished and skipped, a run with a
``last_checkpoint`` is resumed, anything else starts fresh. All runs share one generated
synthetic data set (``OUT/data``), the same iterations and the same seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from instseg.config import load_config
from instseg.recipes.image import train
from instseg.recipes.image_config import ImageTrainConfig

__all__ = ["add_common_args", "run_all", "cell", "markdown_table", "get", "count_params"]


def add_common_args(p: argparse.ArgumentParser, *, variants: Sequence[str]) -> None:
    p.add_argument("--iters", type=int, default=3000, help="training iterations per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument(
        "--variants", nargs="+", default=list(variants), choices=list(variants), metavar="V",
        help=f"variants to run (default: all): {', '.join(variants)}",
    )  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output folder (one dir per run)")
    p.add_argument("--config", default=None, help="optional base YAML (ImageTrainConfig)")
    p.add_argument("--detector", default="effl0_fcos", help="zoo detector prefix")
    p.add_argument("--num-train", type=int, default=1200, help="synthetic training images")
    p.add_argument("--num-test", type=int, default=200, help="synthetic held-out images")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="extra config override for every run (repeatable), e.g. solver.lr=0.002",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true", help="only print the tables of finished runs")


def base_overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"solver.max_iters={args.iters}",
        f"solver.warmup_iters={min(100, max(1, args.iters // 10))}",
        f"checkpoint_period={max(1, min(500, args.iters // 4))}",
        f"data.synthetic.num_train={args.num_train}",
        f"data.synthetic.num_test={args.num_test}",
        f"data.cache_dir={args.out / 'data'}",
        *args.set,
    ]


def run_all(
    args: argparse.Namespace, overrides_of: Callable[[str], list[str]]
) -> dict[str, dict[int, dict[str, Any]]]:
    """Train/evaluate every (variant, seed) not finished yet -> {variant: {seed: metrics}}."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            run_dir = args.out / variant / f"seed{seed}"
            done = run_dir / "metrics.json"
            if not done.is_file() and not args.dry_run:
                ov = [*base_overrides(args), *overrides_of(variant)]
                ov += [f"seed={seed}", f"out_dir={run_dir}"]
                cfg = load_config(ImageTrainConfig, args.config, ov)
                resume = (run_dir / "last_checkpoint").is_file()
                print(f"== {variant} seed {seed}: {'resuming' if resume else 'training'} "
                      f"{args.iters} iterations -> {run_dir}", flush=True)  # fmt: skip
                train(cfg, resume=resume, progress=not args.no_progress)
            if done.is_file():
                out.setdefault(variant, {})[seed] = json.loads(done.read_text())
    return out


def get(metrics: dict[str, Any], *path: str) -> float:
    """Nested lookup; NaN when absent."""
    x: Any = metrics
    for k in path:
        if not isinstance(x, dict) or k not in x:
            return float("nan")
        x = x[k]
    return float(x) if isinstance(x, int | float) else float("nan")


def cell(values: Sequence[float]) -> str:
    """'mean' (one seed) or 'mean ± std' over seeds; '-' when nothing is finite."""
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.2f}"
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}"


def mean(values: Sequence[float]) -> float | None:
    v = [x for x in values if math.isfinite(x)]
    return statistics.mean(v) if v else None


def markdown_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def count_params(model_name: str, num_classes: int, **kw: Any) -> tuple[int, int]:
    """(all parameters, mask-head parameters) of a zoo model (built without weights)."""
    from instseg.models.zoo import build_model

    m = build_model(model_name, num_classes=num_classes, pretrained=False, **kw)
    return sum(p.numel() for p in m.parameters()), sum(p.numel() for p in m.mask_head.parameters())


def num_classes_of(out: Path) -> int:
    """Categories of the shared synthetic training set (1 when none was generated yet)."""
    files = sorted((out / "data").glob("train_*/annotations.json"))
    return len(json.loads(files[0].read_text())["categories"]) if files else 1
