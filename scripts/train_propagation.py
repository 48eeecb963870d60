"""Train the propagation embedding (:mod:`instseg.models.video.propagation_embedding`) for
``instseg propagate --init-masks ... --weights W`` on real DAVIS sequences.

Frozen ImageNet EfficientNet-Lite0 features (:class:`BackboneFeatures`, computed once at
``--max-side`` and cached in ``OUT/features``); each step takes a random sequence, a random
frame t0 and a later frame t1 = t0 + d (d uniform in 1..``--max-gap``), fits prototypes on t0's
ground-truth mask in the embedded space and reads t1 (differentiable GMM-EM + Eq. 5.5), loss
BCE + soft Dice against t1's mask. Default sequences: the six *tuning* sequences of
``scripts/davis_semisup.py``; its held-out ones (bus, soccerball, mallard-fly) are refused.

    python scripts/train_propagation.py --out runs/propagation
    python scripts/davis_semisup.py --weights runs/propagation/model.pt

Writes ``OUT/model.pt`` (fp16 release, ``{"model": state, "meta": {...}}``) and
``OUT/metrics.json`` (loss at start and end, time).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from instseg.data.davis import list_davis_sequences, read_davis_label
from instseg.data.davis_splits import SEMISUP_HELD_OUT, SEMISUP_TUNING
from instseg.engine.weights import WeightsMeta, save_weights_file
from instseg.inference.propagate import (
    BackboneFeatures,
    coverage,
    feature_stride,
    object_ids_of,
)
from instseg.models.video.propagation_embedding import (
    PropagationEmbedding,
    propagation_loss,
    propagation_read,
)
from instseg.utils.image import read_image
from instseg.utils.io import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / ".." / "shared" / "data" / "davis2016-train-subset"
TUNING = SEMISUP_TUNING
HELD_OUT = frozenset(SEMISUP_HELD_OUT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT))
    p.add_argument("--sequences", nargs="+", default=list(TUNING))
    p.add_argument("--out", type=Path, default=Path("runs/propagation"))
    p.add_argument("--iters", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-gap", type=int, default=15)
    p.add_argument("--max-side", type=int, default=480)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    bad = sorted(HELD_OUT & set(args.sequences))
    if bad:
        raise SystemExit(f"train_propagation: {bad} are held out for evaluation")
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    data = _load(args)
    model = PropagationEmbedding(channels=int(data[0][0].shape[1]), hidden=args.hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.iters)
    losses: list[float] = []
    for it in range(args.iters):
        feats, masks = random.choice(data)
        t0 = random.randrange(len(feats) - 1)
        t1 = min(len(feats) - 1, t0 + random.randint(1, args.max_gap))
        emb = model(feats[[t0, t1]])
        prob = propagation_read(emb[0], masks[t0], emb[1])
        loss = propagation_loss(prob, masks[t1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (it + 1) % 50 == 0:
            print(f"iter {it + 1}/{args.iters} loss {np.mean(losses[-50:]):.4f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = WeightsMeta(
        task="propagation",
        model={"channels": model.channels, "hidden": args.hidden},
        training={
            "sequences": args.sequences,
            "iters": args.iters,
            "seed": args.seed,
            "max_side": args.max_side,
        },
    )
    save_weights_file(model, args.out / "model.pt", meta, half=True)
    n = min(50, len(losses))
    metrics = {
        "loss_first50": float(np.mean(losses[:n])),
        "loss_last50": float(np.mean(losses[-n:])),
        "minutes": (time.perf_counter() - t_start) / 60,
    }
    atomic_write_json(args.out / "metrics.json", metrics)
    print(json.dumps(metrics))
    return 0


def _load(args: argparse.Namespace) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """-> per sequence: features (T, C, h, w) and union-of-objects coverage (T, h, w)."""
    cache = args.out / "features"
    cache.mkdir(parents=True, exist_ok=True)
    fx = None
    out = []
    for seq in list_davis_sequences(args.root, sequences=args.sequences):
        path = cache / f"{seq.name}_{args.max_side}.pt"
        labels = [read_davis_label(lp) for lp in seq.label_paths]  # type: ignore[arg-type]
        if path.is_file():
            feats = torch.load(path, weights_only=True)
        else:
            fx = fx or BackboneFeatures(max_side=args.max_side)
            feats = torch.stack([fx(read_image(f)) for f in seq.frame_paths])
            torch.save(feats, path)
        stride = feature_stride(labels[0].shape[:2], args.max_side)
        grid = tuple(feats.shape[-2:])
        masks = []
        for lab in labels:
            ids = object_ids_of(lab)
            cov = coverage(lab, ids, grid, stride) if ids else torch.zeros(1, *grid)
            masks.append(cov.sum(0).clamp(0, 1))
        out.append((feats, torch.stack(masks)))
        print(f"{seq.name}: {len(labels)} frames, grid {grid}", flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
