"""Propagation-embedding recipe: DAVIS sequences -> cached frozen backbone features -> a
:class:`PropagationEmbedding` trained by the engine's Trainer -> ``model.pt`` for
``instseg propagate --init-masks ... --weights W``.

Frozen ImageNet EfficientNet-Lite0 features (:class:`BackboneFeatures`, computed once at
``data.max_side`` and cached in ``data.cache_dir``, default ``<out_dir>/features``); each step
takes a random sequence, a random frame t0 and a later frame t1 = t0 + d (d uniform in
1..``data.max_gap``), fits prototypes on t0's ground-truth mask in the embedded space and reads
t1 (differentiable GMM-EM + Eq. 5.5), loss BCE + soft Dice against t1's mask. The held-out
sequences of ``scripts/davis_semisup.py`` (bus, soccerball, mallard-fly) are refused.

The draws use Python's global ``random`` (seeded ``seed``; a resumed run restores its state from
the checkpoint, so it continues with the same draws). Writes ``<out_dir>/model.pt`` (fp16,
:class:`WeightsMeta` task ``propagation``) and ``metrics.json`` (mean loss of the first and
last 50 steps of this run, minutes).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from instseg.config import ConfigError
from instseg.data.davis import list_davis_sequences, read_davis_label, resolve_davis_root
from instseg.data.davis_splits import SEMISUP_HELD_OUT
from instseg.engine.trainer import Callback, Trainer, seed_everything
from instseg.engine.weights import WeightsMeta
from instseg.models.video.propagation_embedding import (
    PropagationEmbedding,
    propagation_loss,
    propagation_read,
)
from instseg.recipes.propagation_config import PropagationTrainConfig
from instseg.recipes.runner import TrainingRun

__all__ = [
    "PropagationObjective",
    "load_propagation_data",
    "propagation_batches",
    "propagation_meta",
    "train_propagation",
]

log = logging.getLogger(__name__)
HELD_OUT = frozenset(SEMISUP_HELD_OUT)


class PropagationObjective(nn.Module):
    """Trainer-facing wrapper: ``loss(batch)`` of an embedding on one (t0, t1) frame pair.

    ``batch``: ``frames`` (2, C, h, w) backbone features of t0 and t1, ``mask`` (h, w) the
    object coverage of t0, ``target`` (h, w) that of t1 -> ``{"loss": BCE + soft Dice}``.
    """

    def __init__(self, embedding: PropagationEmbedding) -> None:
        super().__init__()
        self.embedding = embedding

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        emb = self.embedding(batch["frames"])
        prob = propagation_read(emb[0], batch["mask"], emb[1])
        return {"loss": propagation_loss(prob, batch["target"])}


def train_propagation(
    cfg: PropagationTrainConfig, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train the embedding (resumable), write ``model.pt`` and ``metrics.json``; returns the
    metrics."""
    bad = sorted(HELD_OUT & set(cfg.data.sequences))
    if bad:
        raise ConfigError(f"data.sequences: {bad} are held out for evaluation")
    t_start = time.perf_counter()
    run = TrainingRun(  # fp32: the small embedding MLP trains in full precision
        cfg, out_dir=cfg.out_dir, seed=cfg.seed, device=cfg.device, amp="none", threads=cfg.threads
    )
    data = load_propagation_data(cfg, run.out_dir)
    # seeded again: the embedding's init must not depend on whether the features were cached
    # (building the backbone draws random numbers)
    seed_everything(cfg.seed)
    embedding = PropagationEmbedding(channels=int(data[0][0].shape[1]), hidden=cfg.hidden)
    embedding = embedding.to(run.device)
    s = cfg.solver
    optimizer = torch.optim.AdamW(embedding.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, s.iters)
    history = LossHistory()
    run.train(
        model=PropagationObjective(embedding),
        checkpoint_model=embedding,
        optimizer=optimizer,
        scheduler=scheduler,
        make_loader=lambda _start: propagation_batches(data, max_gap=cfg.data.max_gap),
        max_iters=s.iters,
        resume=resume,
        progress=progress,
        amp="none",
        checkpoint_period=cfg.checkpoint_period,
        log_period=cfg.log_period,
        callbacks=[history],
        name="propagation",
    )
    n = min(50, len(history.losses))
    metrics = {
        "loss_first50": float(np.mean(history.losses[:n])) if n else float("nan"),
        "loss_last50": float(np.mean(history.losses[-n:])) if n else float("nan"),
        "minutes": (time.perf_counter() - t_start) / 60,
    }
    run.save_weights(embedding, propagation_meta(cfg, embedding), metrics=metrics, half=True)
    return metrics


def propagation_meta(cfg: PropagationTrainConfig, embedding: PropagationEmbedding) -> WeightsMeta:
    """What ``BackboneFeatures(weights=...)`` rebuilds the embedding from, plus provenance."""
    return WeightsMeta(
        task="propagation",
        model={"channels": embedding.channels, "hidden": cfg.hidden},
        training={
            "sequences": list(cfg.data.sequences),
            "iters": cfg.solver.iters,
            "seed": cfg.seed,
            "max_side": cfg.data.max_side,
        },
    )


class LossHistory(Callback):
    """Every step's total loss (of this run, i.e. from the resumed iteration on)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def after_step(self, trainer: Trainer) -> None:
        self.losses.append(float(trainer.metrics["total_loss"]))


def propagation_batches(
    data: list[tuple[Tensor, Tensor]], *, max_gap: int
) -> Iterator[dict[str, Tensor]]:
    """Endless (t0, t1) pairs drawn with the global ``random``: a sequence, t0, d in
    1..max_gap (t1 clipped to the last frame); see :class:`PropagationObjective` for keys."""
    while True:
        feats, masks = random.choice(data)
        t0 = random.randrange(len(feats) - 1)
        t1 = min(len(feats) - 1, t0 + random.randint(1, max_gap))
        yield {"frames": feats[[t0, t1]], "mask": masks[t0], "target": masks[t1]}


def load_propagation_data(
    cfg: PropagationTrainConfig, out_dir: Path
) -> list[tuple[Tensor, Tensor]]:
    """Per sequence: backbone features (T, C, h, w) (cached in ``data.cache_dir``) and the
    union-of-objects coverage (T, h, w) on the feature grid."""
    from instseg.inference.mask_propagation import BackboneFeatures, feature_stride
    from instseg.models.video.mask_propagation import coverage, object_ids_of
    from instseg.utils.image import read_image

    d = cfg.data
    root = resolve_davis_root(d.root)
    cache = Path(d.cache_dir) if d.cache_dir else out_dir / "features"
    cache.mkdir(parents=True, exist_ok=True)
    fx = None
    out = []
    for seq in list_davis_sequences(root, sequences=d.sequences):
        n = d.frames_per_seq if d.frames_per_seq > 0 else len(seq.frame_paths)
        if n < 2:
            raise ValueError(f"{root}: sequence '{seq.name}' needs at least 2 frames, got {n}")
        if any(lp is None for lp in seq.label_paths[:n]):
            raise FileNotFoundError(f"{root}: sequence '{seq.name}' has frames without labels")
        labels = [read_davis_label(lp) for lp in seq.label_paths[:n]]  # type: ignore[arg-type]
        tag = f"_f{n}" if d.frames_per_seq > 0 else ""
        path = cache / f"{seq.name}_{d.max_side}{tag}.pt"
        if path.is_file():
            feats = torch.load(path, weights_only=True)
        else:
            fx = fx or BackboneFeatures(max_side=d.max_side)
            feats = torch.stack([fx(read_image(f)) for f in seq.frame_paths[:n]])
            torch.save(feats, path)
        stride = feature_stride(labels[0].shape[:2], d.max_side)
        grid = tuple(feats.shape[-2:])
        masks = []
        for lab in labels:
            ids = object_ids_of(lab)
            cov = coverage(lab, ids, grid, stride) if ids else torch.zeros(1, *grid)
            masks.append(cov.sum(0).clamp(0, 1))
        out.append((feats, torch.stack(masks)))
        log.info("%s: %d frames, grid %s", seq.name, len(labels), grid)
    return out
