"""The evaluator protocol (reset / process / evaluate) and the loop that feeds it.

An evaluator sees every batch and the model's predictions for it, keeps whatever it needs
(usually JSON-ready results, not tensors), and computes metrics once at the end. The loop
:func:`inference_on_dataset` is shared by every task (image, video, inpainting).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn

from instseg.structures import Instances
from instseg.structures.batch import Batch
from instseg.utils.precision import autocast
from instseg.utils.progress import Progress

__all__ = ["DatasetEvaluator", "inference_on_dataset", "is_main_process"]

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Base class: accumulate predictions batch by batch, then compute metrics.

    ``reset()`` is called before a run, ``process(batch, outputs)`` once per batch, and
    ``evaluate()`` at the end. In distributed runs every rank processes its share;
    ``evaluate()`` gathers and returns the metrics on rank 0 and ``{}`` on other ranks.
    """

    def reset(self) -> None:
        """Forget everything seen so far."""

    def process(self, batch: Batch, outputs: list[Instances]) -> None:
        """``outputs[i]`` holds the predictions for image ``i`` of ``batch``, in the batch's
        (transformed, unpadded) coordinates ``batch.image_sizes[i]``."""

    def evaluate(self) -> dict[str, Any]:
        """Metrics as a (possibly nested) dict of floats."""
        return {}


class _Predictor(Protocol):
    def predict(self, batch: Batch) -> list[Instances]: ...


def is_main_process() -> bool:
    """True outside distributed runs and on rank 0."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def inference_on_dataset(
    model: _Predictor,
    loader: Iterable[Batch],
    evaluator: DatasetEvaluator,
    *,
    amp: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``model.predict`` over ``loader`` and return ``evaluator.evaluate()``.

    The model is put in eval mode for the run (its previous mode is restored), batches are
    moved to the model's device, and prediction runs under ``torch.no_grad()`` and the autocast
    of ``amp`` (:mod:`instseg.utils.precision`; "auto": bf16 only where the hardware runs it
    natively, else fp32). ``progress`` shows progress on the main process (a tqdm bar on a
    terminal, else a line every 20 batches: :mod:`instseg.utils.progress`).
    """
    device = _model_device(model)
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    evaluator.reset()
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    bar = Progress(
        loader, total=total, desc="inference", disable=not (progress and is_main_process())
    )
    start, n_images = time.perf_counter(), 0
    try:
        for batch in bar:
            if device is not None:
                batch = batch.to(device)
            with torch.no_grad(), autocast(amp, device or torch.device("cpu")):
                outputs = model.predict(batch)
            if len(outputs) != len(batch):
                raise RuntimeError(
                    f"model.predict returned {len(outputs)} results for a batch of {len(batch)}"
                )
            evaluator.process(batch, outputs)
            n_images += len(batch)
    finally:
        bar.close()
        if isinstance(model, nn.Module):
            model.train(was_training)
    elapsed = time.perf_counter() - start
    logger.info(
        "inference: %d images in %.1fs (%.3fs/image)", n_images, elapsed, elapsed / max(n_images, 1)
    )
    return evaluator.evaluate()


def _model_device(model: Any) -> torch.device | None:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return None
