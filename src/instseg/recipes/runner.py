"""The steps every training recipe shares, in one place: :class:`TrainingRun`.

A recipe (image, video, propagation, inpainting) builds its data, model, optimizer and the
weights meta; the run does the rest::

    run = TrainingRun(cfg, out_dir=cfg.out_dir, seed=cfg.seed, device=cfg.device,
                      amp=cfg.solver.amp, threads=cfg.threads)   # seeds, writes config.yaml
    model = build(...).to(run.device)
    trainer = run.train(model=model, optimizer=opt, scheduler=sched, max_iters=N,
                        make_loader=lambda start: loader_from(start), resume=resume)
    run.save_weights(model, meta, metrics=trainer.eval_results)  # model.pt + metrics.json

The engine's :class:`~instseg.engine.trainer.Trainer` stays the loop; the run constructs it
with the shared callbacks (progress bar, TensorBoard, a log line every ``log_period`` when no
bar is shown), resumes from ``<out_dir>/last_checkpoint`` and positions the data at the resumed
iteration (``make_loader(start_iter)`` must yield the batch of iteration ``start_iter`` first).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instseg.config import dump_config
from instseg.engine.checkpoint import Checkpointer
from instseg.engine.trainer import Callback, ProgressBar, TensorBoardWriter, Trainer
from instseg.engine.weights import WeightsMeta
from instseg.utils.io import atomic_write_json

__all__ = ["LogLine", "TrainingRun", "resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class LogLine(Callback):
    """``log.info`` of the loss terms every ``trainer.log_period`` iterations (for runs without
    a progress bar, e.g. not on a terminal)."""

    def __init__(self, name: str = "train") -> None:
        self.name = name

    def after_step(self, trainer: Trainer) -> None:
        if trainer.iter % trainer.log_period == 0 or trainer.iter >= trainer.max_iters:
            m = trainer.metrics
            terms = " ".join(f"{k} {v:.4f}" for k, v in m.items() if k not in ("lr", "data_time"))
            log.info("%s iter %d/%d %s", self.name, trainer.iter, trainer.max_iters, terms)


class TrainingRun:
    """One training run: output folder, ``config.yaml``, threads, seeding, device; then
    :meth:`train` (a resumable :class:`Trainer`) and :meth:`save_weights` (final file)."""

    def __init__(
        self,
        cfg: Any,
        *,
        out_dir: str | Path,
        seed: int,
        device: str = "auto",
        amp: str = "auto",
        threads: int = 0,
        main_process: bool = True,
    ) -> None:
        """Set ``threads`` (0: torch's default), seed Python / NumPy / torch with ``seed``
        (pass a rank-dependent seed under DDP), resolve ``device`` and, on the main process,
        write ``cfg`` to ``out_dir/config.yaml`` headed by the precision ``amp`` resolves to."""
        from instseg.engine.trainer import seed_everything
        from instseg.utils.precision import precision_header

        self.cfg, self.out_dir, self.main_process = cfg, Path(out_dir), main_process
        if threads > 0:
            torch.set_num_threads(threads)
        seed_everything(seed)
        self.device = resolve_device(device)
        if main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            header = precision_header(amp, self.device)
            dump_config(cfg, self.out_dir / "config.yaml", header=header)

    def train(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        make_loader: Callable[[int], Iterable[Any]],
        max_iters: int,
        scheduler: Any = None,
        train_model: nn.Module | None = None,
        checkpoint_model: nn.Module | None = None,
        out_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        amp: str = "auto",
        grad_clip: float | None = None,
        channels_last: bool = False,
        checkpoint_period: int = 0,
        log_period: int = 20,
        eval_fn: Callable[[], dict] | None = None,
        eval_period: int = 0,
        tensorboard: bool = True,
        callbacks: Sequence[Callback] = (),
        name: str = "train",
        ema: Any = None,
    ) -> Trainer:
        """Build the :class:`Trainer`, resume (``resume``: from ``out_dir/last_checkpoint`` if
        there is one), build the data with ``make_loader(start_iter)`` and train to
        ``max_iters``. Returns the trainer (``eval_results``, ``iter``).

        ``model`` is what the trainer steps (its ``loss(batch)`` gives the loss terms);
        ``train_model`` replaces it in the trainer (a DDP wrapper); ``checkpoint_model`` is
        what checkpoints hold (default ``model``; e.g. the bare network of a loss wrapper).
        ``out_dir`` (default the run's) holds checkpoints, ``metrics.jsonl`` and ``tb/``.
        """
        out = Path(out_dir) if out_dir is not None else self.out_dir
        checkpointer = Checkpointer(
            checkpoint_model if checkpoint_model is not None else model,
            optimizer=optimizer,
            scheduler=scheduler,
            save_dir=out,
        )
        bar = ProgressBar(enabled=progress)
        shared: list[Callback] = [bar]
        if not (progress and sys.stderr.isatty()):
            shared.append(LogLine(name))
        if tensorboard and self.main_process:
            shared.append(TensorBoardWriter(out / "tb"))
        trainer = Trainer(
            model=train_model if train_model is not None else model,
            optimizer=optimizer,
            scheduler=scheduler,
            data_loader=[],  # set below, once the start iteration is known
            max_iters=max_iters,
            device=self.device,
            amp=amp,
            channels_last=channels_last,
            grad_clip=grad_clip,
            checkpointer=checkpointer,
            checkpoint_period=checkpoint_period,
            callbacks=[*shared, *callbacks],
            log_period=log_period,
            eval_fn=eval_fn,
            eval_period=eval_period,
            out_dir=out,
            ema=ema,
        )
        start_iter = trainer.resume_or_load(resume=True) if resume else 0
        if resume and start_iter:
            log.info("%s: resumed at iteration %d from %s", name, start_iter, out)
        trainer.data_loader = make_loader(start_iter)
        trainer.train()
        return trainer

    def save_weights(
        self,
        model: nn.Module,
        meta: WeightsMeta,
        *,
        metrics: dict[str, Any] | None = None,
        name: str = "model.pt",
        half: bool = False,
    ) -> Path:
        """On the main process: ``out_dir/<name>`` (:func:`save_weights_file`, fp16 with
        ``half``) and, when ``metrics`` is given, ``out_dir/metrics.json``."""
        from instseg.engine.weights import save_weights_file

        path = self.out_dir / name
        if self.main_process:
            save_weights_file(model, path, meta, half=half)
            if metrics is not None:
                atomic_write_json(self.out_dir / "metrics.json", metrics, indent=2)
        return path
