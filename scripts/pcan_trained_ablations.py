"""Trained PCAN ablation rows (issue 15, D5): every row is its own training run (several seeds),
scored on a held-out synthetic video split against a baseline row, with paired per-video
bootstrap intervals.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/pcan_trained_ablations.py \\
        --config configs/pcan_objects.yaml \\
        --row "image-only=runs/abl15/img_s0,runs/abl15/img_s1,runs/abl15/img_s2" \\
        --row "T = 1=runs/abl15/t1_s0,runs/abl15/t1_s1,runs/abl15/t1_s2" \\
        --baseline image-only --out runs/abl15/report \\
        data.synthetic.seed_test=2000 data.synthetic.num_test=32 data.cache_dir=runs/abl15/eval_data

Metrics, fixed before the runs (issue 15): primary, per-frame mask AP on the corrupted frames
and oracle-association VIS AP (:func:`instseg.evaluation.vis_paired.oracle_association`: the
tracker's identities replaced by the ground truth's); then VIS AP of online tracking, sMOTSA and
HOTA (TrackEval, KITTI-MOTS layout, as ``scripts/pcan_mots.py``). A row's value is the mean over
its seeds (per-seed values listed); the interval of a row against the baseline resamples the
held-out videos (:func:`instseg.evaluation.vis_paired.paired_video_bootstrap`, seeds paired by
index), so it covers the spread over videos, not over seeds (the per-seed values show that);
``--compare A:B`` adds the interval of row A against row B (e.g. an instance-update row
against the T = 4 row it changes). Every run is scored once per resample for all pairs.

Liveness of the memory (rows with a PCAM): the mean ratio ||fusion branch|| / ||input feature||
of each PCAM level over the held-out frames; on the first ``--liveness`` videos also each level's
responsibility entropy (1: the prototypes collapsed), the entropy of the Eq. 5.7 frame weights
(1: a plain average over the memory) and the weight on the current frame
(:meth:`~instseg.models.video.cross_attention.PrototypicalCrossAttention.diagnostics`).

Every run's predictions are cached in ``OUT/runs/<run>/`` (tracks JSON, MOTS txt, metrics), so
a rerun only scores what is new. Writes ``OUT/report.md`` and ``OUT/report.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pcan_mots import track_split_mots  # noqa: E402  (the sibling script's tracking + MOTS)

from instseg.config import load_config
from instseg.data.ytvis import YTVISDataset
from instseg.evaluation.vis import YTVISEvaluator, evaluate_vis, evaluate_vis_frames
from instseg.evaluation.vis_paired import interval_of, oracle_association, video_bootstrap_draws
from instseg.inference.video_predictor import VideoPredictor, load_video_model
from instseg.recipes.video import corrupted_subsets, load_test_split
from instseg.recipes.video_config import VideoTrainConfig
from instseg.utils.image import read_image
from instseg.utils.io import atomic_write_json, atomic_write_text

MOTS_SCORE = 0.3  # masks kept for MOTS, as scripts/pcan_mots.py and `instseg track`


def _fp32_predictor(run: Path, cfg: VideoTrainConfig) -> tuple[Any, VideoPredictor]:
    """``run/model.pt`` in fp32 eval mode and its online predictor (the config's test sizes and
    tracker); hooks registered on the model afterwards see the predictor's calls."""
    model, _ = load_video_model(run / "model.pt", device="cpu")
    model = model.float().eval()
    predictor = VideoPredictor(
        model, min_size=cfg.data.test_min_size, max_size=cfg.data.max_size, amp="none",
        tracker=cfg.tracker,
    )  # fmt: skip
    return model, predictor


def predict_run(
    run: Path, test: YTVISDataset, cfg: VideoTrainConfig, out: Path
) -> tuple[list[dict[str, Any]], dict[str, float], dict[str, float]]:
    """Tracks (YouTube-VIS results), MOTS metrics and PCAM branch ratios of ``run/model.pt``
    on ``test``; cached in ``out``."""
    done = out / "done.json"
    if done.is_file():
        d = json.loads(done.read_text())
        return json.loads((out / "tracks.json").read_text()), d["mots"], d["branch"]
    model, predictor = _fp32_predictor(run, cfg)
    ratios: dict[str, list[float]] = defaultdict(list)
    hooks = []
    for level, m in model.pcam.levels.items():

        def hook(mod: Any, inp: tuple[torch.Tensor, ...], outp: torch.Tensor, lv=level) -> None:
            x = inp[0][:, : inp[0].shape[1] // 2]  # fuse(cat([x, y_bar])): x is the first half
            ratios[lv].append(float(outp.norm() / x.norm().clamp_min(1e-12)))

        hooks.append(m.fuse.register_forward_hook(hook))
    evaluator = YTVISEvaluator(test, category_ids=list(test.categories))
    with torch.no_grad():
        mots = track_split_mots(
            predictor, test, out / "mots", score_thresh=MOTS_SCORE,
            on_frame=evaluator.process_frame,
        )["car"]  # fmt: skip
    for h in hooks:
        h.remove()
    tracks = evaluator.tracks()
    branch = {lv: float(np.mean(v)) for lv, v in ratios.items()}
    atomic_write_json(out / "tracks.json", tracks)
    keep = {k: float(mots[k]) for k in ("sMOTSA", "MOTSA", "IDF1", "IDSW", "HOTA")}
    atomic_write_json(done, {"mots": keep, "branch": branch}, indent=1)
    return tracks, keep, branch


def pcam_liveness(
    run: Path, test: YTVISDataset, cfg: VideoTrainConfig, out: Path, *, videos: int
) -> dict[str, float]:
    """Mean PCAM diagnostics per level (``resp_entropy p3``, ``frame_weight_entropy p3``,
    ``current_weight p3``, ...) of ``run/model.pt`` tracking the first ``videos`` videos of
    ``test``; {} for a model without PCAM levels. Cached in ``out/liveness.json``."""
    done = out / "liveness.json"
    if done.is_file():
        d = json.loads(done.read_text())
        if d.get("videos") == videos:
            return d["liveness"]
    model, predictor = _fp32_predictor(run, cfg)
    values: dict[str, list[float]] = defaultdict(list)
    hooks = []
    for level, m in model.pcam.levels.items():

        def hook(mod: Any, inp: tuple[Any, ...], outp: Any, lv: str = level) -> None:
            for k, v in mod.diagnostics(inp[0], inp[1]).items():
                values[f"{k} {lv}"].append(v)

        hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        for video in test.videos[:videos]:
            predictor.reset()
            for path in video.frame_paths:
                predictor(read_image(path))
    for h in hooks:
        h.remove()
    live = {k: float(np.mean(v)) for k, v in sorted(values.items())}
    atomic_write_json(done, {"videos": videos, "liveness": live}, indent=1)
    return live


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the rows' training config (its test split)")
    p.add_argument(
        "--row",
        action="append",
        required=True,
        help="NAME=RUN_DIR,RUN_DIR,... (one run per seed, same seed order per row)",
    )
    p.add_argument("--baseline", required=True, help="the row the others are compared with")
    p.add_argument("overrides", nargs="*", help="config overrides for the held-out split")
    p.add_argument("--out", type=Path, default=Path("runs/pcan_trained_ablations"))
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        help="also A:B (two row names): interval of A - B, e.g. 'update off:T = 4'",
    )
    p.add_argument("--resamples", type=int, default=200)
    p.add_argument(
        "--liveness", type=int, default=8, help="videos for the PCAM diagnostics (0: none)"
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: dict[str, list[Path]] = {}
    for spec in args.row:
        name, _, runs = spec.rpartition("=")  # the name may hold "=" ("T = 4"), paths do not
        if not runs:
            raise SystemExit(f"--row {spec!r}: expected NAME=RUN_DIR[,RUN_DIR...]")
        rows[name] = [Path(r) for r in runs.split(",")]
        for r in rows[name]:
            if not (r / "model.pt").is_file():
                raise SystemExit(f"--row {name}: {r / 'model.pt'} does not exist")
    if args.baseline not in rows:
        raise SystemExit(f"--baseline {args.baseline!r} is not a --row name")
    cfg = load_config(VideoTrainConfig, args.config, args.overrides)
    try:
        splits, test = load_test_split(cfg)
    except ValueError as e:
        raise SystemExit(f"{args.config}: {e}") from None
    subsets = corrupted_subsets(splits)
    if subsets is None:
        raise SystemExit(f"{splits.test_json}: made without video effects (no corrupted frames)")
    corrupted = subsets["corrupted"]

    def frame_ap(g: YTVISDataset, r: list[dict], f: dict | None) -> float:
        return float(evaluate_vis_frames(g, r, f)["AP"])

    def vis_ap(g: YTVISDataset, r: list[dict], f: dict | None) -> float:
        return float(evaluate_vis(g, r)["AP"])

    # the oracle association is per video, so it is done once per run and the resampled
    # videos are scored by plain VIS AP (the same numbers as re-associating each resample)
    metrics = {"frame AP corrupted": frame_ap, "oracle VIS AP": vis_ap, "VIS AP": vis_ap}
    preds: dict[str, list[list[dict]]] = {}
    oracle: dict[str, list[list[dict]]] = {}
    report: dict[str, Any] = {"config": args.config, "overrides": args.overrides,
                              "test_json": str(splits.test_json), "videos": len(test.videos),
                              "corrupted_frames": sum(map(len, corrupted.values())),
                              "rows": {}}  # fmt: skip
    for name, runs in rows.items():
        preds[name], oracle[name] = [], []
        per_seed: list[dict[str, float]] = []
        for run in runs:
            tracks, mots, branch = predict_run(run, test, cfg, args.out / "runs" / run.name)
            preds[name].append(tracks)
            oracle[name].append(oracle_association(test, tracks))
            vals = {
                k: fn(test, oracle[name][-1] if k.startswith("oracle") else tracks, corrupted)
                for k, fn in metrics.items()
            }
            vals.update({"sMOTSA": mots["sMOTSA"], "HOTA": mots["HOTA"]})
            vals.update({f"branch {lv}": v for lv, v in branch.items()})
            if args.liveness > 0:
                out = args.out / "runs" / run.name
                vals.update(pcam_liveness(run, test, cfg, out, videos=args.liveness))
            per_seed.append(vals)
            print(
                f"{name} {run}: " + ", ".join(f"{k} {v:.2f}" for k, v in vals.items()), flush=True
            )
        report["rows"][name] = {"runs": [str(r) for r in runs], "per_seed": per_seed}
    for name in rows:
        entry = report["rows"][name]
        entry["mean"] = {
            k: float(np.mean([s[k] for s in entry["per_seed"]])) for k in entry["per_seed"][0]
        }
        if len(preds[name]) != len(preds[args.baseline]):
            raise SystemExit(f"row {name}: {len(preds[name])} seeds, the baseline has "
                             f"{len(preds[args.baseline])}")  # fmt: skip
    pairs = [(n, args.baseline) for n in rows if n != args.baseline]
    for spec in args.compare:
        a, _, b = spec.partition(":")
        if a not in rows or b not in rows:
            raise SystemExit(f"--compare {spec!r}: both must be --row names")
        pairs.append((a, b))
    report["comparisons"] = {}
    for k, fn in metrics.items():  # each run is scored once per resample, for all pairs
        src = oracle if k.startswith("oracle") else preds
        draws = video_bootstrap_draws(
            test, src, fn, frames=corrupted, resamples=args.resamples, seed=0
        )
        for a, b in pairs:
            iv = interval_of(draws[a], draws[b], n=len(test.videos))
            cmp = report["comparisons"].setdefault(f"{a} - {b}", {})
            cmp[k] = {"mean": iv.mean, "low": iv.low, "high": iv.high}
            if b == args.baseline:
                report["rows"][a].setdefault("vs_baseline", {})[k] = cmp[k]
            print(f"{a} - {b}: {k} {iv.mean:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}]", flush=True)
    atomic_write_json(args.out / "report.json", report, indent=1, default=float)
    text = _markdown(report, args.baseline, list(metrics))
    atomic_write_text(args.out / "report.md", text)
    print(text)
    return 0


def _markdown(report: dict[str, Any], baseline: str, primary: list[str]) -> str:
    keys = [*primary, "sMOTSA", "HOTA"]
    lines = [
        f"{report['videos']} held-out videos ({report['test_json']}, "
        f"{report['corrupted_frames']} corrupted frames); mean over seeds, per-seed values in "
        f"report.json; [95% paired per-video bootstrap interval of the difference to "
        f"{baseline}]",
        "",
        "| row | seeds | " + " | ".join(keys) + " | PCAM branch / input (p3, p4, p5) |",
        "|---|---:|" + "---:|" * len(keys) + "---|",
    ]
    for name, e in report["rows"].items():
        cells = []
        for k in keys:
            c = f"{e['mean'][k]:.1f}"
            iv = e.get("vs_baseline", {}).get(k)
            if iv is not None:
                c += f" ({iv['mean']:+.1f} [{iv['low']:+.1f}, {iv['high']:+.1f}])"
            seeds = ", ".join(f"{s[k]:.1f}" for s in e["per_seed"])
            cells.append(f"{c}<br>{seeds}")
        br = [v for k, v in e["mean"].items() if k.startswith("branch")]
        lines.append(
            f"| {name} | {len(e['per_seed'])} | " + " | ".join(cells) + " | "
            + (", ".join(f"{v:.2f}" for v in br) if br else "-") + " |"
        )  # fmt: skip
    live = sorted({k for e in report["rows"].values() for k in e["mean"]
                   if k.split(" ")[0] in ("resp_entropy", "frame_weight_entropy",
                                          "current_weight")})  # fmt: skip
    if live:
        lines += ["", "PCAM liveness (mean over seeds; entropies normalised to [0, 1])", "",
                  "| row | " + " | ".join(live) + " |", "|---|" + "---:|" * len(live)]  # fmt: skip
        for name, e in report["rows"].items():
            cells = [f"{e['mean'][k]:.2f}" if k in e["mean"] else "-" for k in live]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    extra = {k: v for k, v in report["comparisons"].items() if not k.endswith(f" - {baseline}")}
    if extra:
        lines += ["", "| comparison | " + " | ".join(primary) + " |",
                  "|---|" + "---:|" * len(primary)]  # fmt: skip
        for name, c in extra.items():
            cells = [f"{c[k]['mean']:+.1f} [{c[k]['low']:+.1f}, {c[k]['high']:+.1f}]"
                     for k in primary]  # fmt: skip
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
