"""Paired comparison of heads from *different* runs of ``benchmarks/mask_heads.py``.

A run compares its own heads with each other; rows across runs (an oracle run against the
no-novel-mask run, a loss-weight variant against the unweighted heads) pair the per-instance
values of two ``per_instance.npz`` files. That is only valid when both runs scored the same
evaluation instances: the script checks that the occlusion ratios and image indices of the set
are identical in both files and refuses otherwise.

    .venv/bin/python benchmarks/mask_heads_compare.py --set unseen \\
        runs/bench_heads_oracle_aff:cpmask_affinity runs/bench_heads_cpmask:cpmask_affinity \\
        [RUN:HEAD RUN:HEAD ...]

Arguments come in pairs ``A B``: each prints the mean over seeds of A's per-instance IoU minus
B's, on the > 30% occluded (the benchmark's primary metric), unoccluded and all instances, with
image-bootstrap 95% intervals (:func:`instseg.evaluation.head_metrics.paired_bootstrap`, the
benchmark's own), as a markdown table; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from instseg.evaluation.head_metrics import occlusion_bins, paired_bootstrap  # noqa: E402
from instseg.utils.io import atomic_write_json  # noqa: E402


def load_head(spec: str, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``RUN:HEAD`` -> (per-instance IoU averaged over the run's seeds, the set's arrays)."""
    run, sep, head = spec.rpartition(":")
    if not sep or not run or not head:
        raise SystemExit(f"{spec!r}: expected RUN_FOLDER:HEAD")
    path = Path(run) / "per_instance.npz"
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (a benchmarks/mask_heads.py output folder?)")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    prefix = f"{split}/{head}/"
    seeds = sorted({k[len(prefix) :].split("/")[0] for k in arrays if k.startswith(prefix)})
    if not seeds:
        heads = sorted({k.split("/")[1] for k in arrays if k.startswith(f"{split}/")} - {
            "occlusion_ratio", "image_index", "lookalike"
        })  # fmt: skip
        raise SystemExit(f"{path}: no head {head!r} on set {split!r}; heads there: {heads}")
    iou = np.mean(np.stack([arrays[f"{prefix}{s}/iou"] for s in seeds]), axis=0)
    meta = {k: arrays[f"{split}/{k}"] for k in ("occlusion_ratio", "image_index")}
    meta["seeds"] = np.array([int(s) for s in seeds])
    return iou, meta


def compare(a: str, b: str, *, split: str, resamples: int) -> dict[str, dict[str, float]]:
    """Paired intervals of ``a`` minus ``b`` (``RUN:HEAD`` each) on ``split``."""
    ia, ma = load_head(a, split)
    ib, mb = load_head(b, split)
    for k in ("occlusion_ratio", "image_index"):
        if ma[k].shape != mb[k].shape or not np.array_equal(ma[k], mb[k]):
            raise SystemExit(
                f"{a} and {b} scored different {split!r} instances ({k} differs): not pairable"
            )
    if not np.array_equal(ma["seeds"], mb["seeds"]):
        print(f"note: seeds differ ({ma['seeds'].tolist()} vs {mb['seeds'].tolist()})")
    bins = occlusion_bins(ma["occlusion_ratio"])
    out = {}
    for name, sel in (
        ("occluded", bins["occluded"]),
        ("unoccluded", bins["unoccluded"]),
        ("all", np.ones_like(bins["occluded"])),
    ):
        iv = paired_bootstrap(ia[sel], ib[sel], ma["image_index"][sel], resamples=resamples)
        out[name] = {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pairs", nargs="+", metavar="RUN:HEAD", help="A B [A B ...]")
    p.add_argument("--set", default="unseen", help="evaluation set: test or unseen")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--json", default="", help="also write the numbers to this file")
    args = p.parse_args(argv)
    if len(args.pairs) % 2:
        p.error("give RUN:HEAD arguments in pairs (A B)")
    rows = {}
    print(f"set {args.set}: per-instance IoU, points, image-bootstrap 95% interval\n")
    print("| comparison | > 30% occluded | unoccluded | all |\n|---|---:|---:|---:|")
    for a, b in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        r = compare(a, b, split=args.set, resamples=args.bootstrap)
        rows[f"{a} - {b}"] = r
        cells = [
            f"{r[k]['mean'] * 100:+.2f} [{r[k]['low'] * 100:+.2f}, {r[k]['high'] * 100:+.2f}]"
            for k in ("occluded", "unoccluded", "all")
        ]
        print(f"| {a} - {b} | " + " | ".join(cells) + " |")
    if args.json:
        atomic_write_json(Path(args.json), {"set": args.set, "rows": rows}, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
