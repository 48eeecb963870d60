"""Iteration-based training loop with a one-screen step and a short list of callbacks.

Example::

    model = build_model(...).to(device)
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05)
    scheduler = build_scheduler(optimizer, max_iters=90_000, warmup_iters=1000, warmup_factor=1e-3)
    ckpt = Checkpointer(model, optimizer=optimizer, scheduler=scheduler, save_dir=out_dir)
    trainer = Trainer(model=wrap_ddp(model), optimizer=optimizer, scheduler=scheduler,
                      data_loader=loader, max_iters=90_000, device=device, amp="auto",
                      checkpointer=ckpt, checkpoint_period=5000, out_dir=out_dir,
                      callbacks=[ProgressBar(), TensorBoardWriter(out_dir / "tb")])
    start = trainer.resume_or_load(weights, resume=True)  # then position the loader at ``start``
    trainer.train()

``trainer.iter`` counts completed iterations; ``train()`` runs steps ``iter .. max_iters-1``.
The data loader is iterated lazily by ``train()``; for an exact resume it must yield the batch of
iteration ``trainer.iter`` first (e.g. a sampler seeded per iteration and given the start).

Built-in callbacks are added from the constructor arguments, in this order: periodic eval
(``eval_fn``), periodic checkpoint (``checkpointer``), ``metrics.jsonl`` writer (``out_dir``);
then the user's ``callbacks``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from instseg.engine.checkpoint import Checkpointer
from instseg.engine.distributed import is_main_process, reduce_dict
from instseg.utils.io import atomic_write_text
from instseg.utils.precision import autocast, resolve_amp

__all__ = [
    "Callback",
    "JSONMetricsWriter",
    "PeriodicCheckpoint",
    "PeriodicEval",
    "ProgressBar",
    "TensorBoardWriter",
    "Trainer",
    "seed_everything",
]


class Trainer:
    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        data_loader: Iterable[Any],
        max_iters: int,
        device: torch.device | str = "cpu",
        amp: str = "auto",
        channels_last: bool = False,
        grad_clip: float | None = None,
        checkpointer: Checkpointer | None = None,
        checkpoint_period: int = 0,
        callbacks: list[Callback] | None = None,
        log_period: int = 20,
        eval_fn: Callable[[], dict] | None = None,
        eval_period: int = 0,
        out_dir: str | Path | None = None,
        ema: Any | None = None,
    ) -> None:
        """``model`` is the plain model or the output of ``wrap_ddp`` (whose forward is the
        loss). ``eval_fn() -> dict`` runs every ``eval_period`` iterations (0: only at the end)
        under ``torch.no_grad`` with the model in eval mode; ``checkpoint_period`` 0 saves only
        ``model_final``. ``amp``: see :mod:`instseg.utils.precision`. ``channels_last``: every
        4-D ``images`` tensor of a batch is made NHWC before the step (convert the model itself
        with ``model.to(memory_format=torch.channels_last)`` before wrapping it). ``ema``: a
        :class:`~instseg.engine.ema.ModelEMA` updated after every optimizer step (and saved in
        checkpoints when a ``checkpointer`` is given)."""
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.data_loader = data_loader
        self.max_iters = int(max_iters)
        self.device = torch.device(device)
        self.grad_clip = grad_clip
        self.channels_last = channels_last
        self.log_period = max(1, int(log_period))
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.iter = 0
        self.metrics: dict[str, float] = {}  # scalars of the last step (mean over ranks)
        self.eval_results: dict = {}  # last eval_fn() output ...
        self.eval_iter = -1  # ... and the iteration it was run at
        self.amp = resolve_amp(amp, self.device)  # "bf16" | "fp16" | "none"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.checkpointer = checkpointer
        self.ema = ema
        if checkpointer is not None and ema is not None:
            checkpointer.ema = ema
        if checkpointer is not None and self.scaler.is_enabled():
            checkpointer.scaler = self.scaler
        self.callbacks: list[Callback] = []
        if eval_fn is not None:
            self.callbacks.append(PeriodicEval(eval_fn, period=eval_period))
        if checkpointer is not None:
            self.callbacks.append(PeriodicCheckpoint(checkpointer, period=checkpoint_period))
        if self.out_dir is not None:
            self.callbacks.append(JSONMetricsWriter(self.out_dir / "metrics.jsonl"))
        self.callbacks += list(callbacks or [])
        self._data_iter: Iterator[Any] | None = None

    def resume_or_load(self, path: str | Path | None = None, *, resume: bool = True) -> int:
        """Resume from the checkpointer's last checkpoint or load weights from ``path``; sets and
        returns ``self.iter``."""
        if self.checkpointer is None:
            raise ValueError("resume_or_load needs a checkpointer")
        self.iter = self.checkpointer.resume_or_load(path, resume=resume)
        return self.iter

    def train(self) -> None:
        """Run iterations ``self.iter .. max_iters - 1``, calling the callbacks around them.

        ``after_train`` runs even when a step raises (callbacks check ``iter >= max_iters``
        before doing end-of-training work such as the final checkpoint)."""
        self.model.train()
        self._data_iter = iter(self.data_loader)
        for cb in self.callbacks:
            cb.before_train(self)
        try:
            while self.iter < self.max_iters:
                self.run_step()
                self.iter += 1
                for cb in self.callbacks:
                    cb.after_step(self)
        finally:
            for cb in self.callbacks:
                cb.after_train(self)

    def run_step(self) -> None:
        """One iteration: batch -> losses -> finite check -> backward -> clip -> step."""
        t0 = time.perf_counter()
        batch = move_to_device(self._next_batch(), self.device)
        if self.channels_last:
            batch = images_channels_last(batch)
        data_time = time.perf_counter() - t0
        lr = self.optimizer.param_groups[0]["lr"]
        with autocast(self.amp, self.device):
            losses = self._loss(batch)
        total = sum(v.float() for v in losses.values())
        values = self._check_finite(losses)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self._params(), self.grad_clip)
            values["grad_norm"] = float(norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model.module if _is_ddp(self.model) else self.model)
        if self.scheduler is not None:
            self.scheduler.step()
        values.update(lr=lr, data_time=data_time, time=time.perf_counter() - t0)
        self.metrics = values

    def _next_batch(self) -> Any:
        assert self._data_iter is not None, "call train()"
        try:
            return next(self._data_iter)
        except StopIteration:
            raise RuntimeError(
                f"the data loader ran out at iteration {self.iter} of {self.max_iters}; the "
                "trainer needs an infinite (iteration-based) loader"
            ) from None

    def _loss(self, batch: Any) -> dict[str, Tensor]:
        losses = self.model(batch) if _is_ddp(self.model) else self.model.loss(batch)
        if not isinstance(losses, dict) or not losses:
            raise TypeError(f"model.loss must return a non-empty dict, got {type(losses)}")
        for k, v in losses.items():
            if not isinstance(v, Tensor) or v.numel() != 1:
                what = f"shape {tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__
                raise TypeError(f"loss term {k!r} must be a scalar tensor, got {what}")
        return losses

    def _check_finite(self, losses: dict[str, Tensor]) -> dict[str, float]:
        """Mean of each term over ranks (one sync); a non-finite term on any rank stops all."""
        values = reduce_dict({k: v.detach().float() for k, v in losses.items()})
        values["total_loss"] = sum(values.values())
        for name, value in values.items():
            if not np.isfinite(value):
                terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                raise FloatingPointError(
                    f"loss term '{name}' is {value} at iteration {self.iter} ({terms}); training "
                    "stopped. Lower the learning rate, set grad_clip, or check this batch's inputs."
                )
        return values

    def _params(self) -> list[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]


class Callback:
    """Hooks called by :meth:`Trainer.train`; ``trainer.iter`` is already incremented in
    ``after_step`` (it counts completed iterations)."""

    def before_train(self, trainer: Trainer) -> None:
        pass

    def after_step(self, trainer: Trainer) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass


class PeriodicEval(Callback):
    """Run ``eval_fn()`` every ``period`` iterations and once at the end (on every rank)."""

    def __init__(self, eval_fn: Callable[[], dict], *, period: int = 0) -> None:
        self.eval_fn = eval_fn
        self.period = period

    def after_step(self, trainer: Trainer) -> None:
        if self.period > 0 and trainer.iter % self.period == 0:
            self._run(trainer)

    def after_train(self, trainer: Trainer) -> None:
        if trainer.iter >= trainer.max_iters and trainer.eval_iter != trainer.iter:
            self._run(trainer)

    def _run(self, trainer: Trainer) -> None:
        trainer.model.eval()
        with torch.no_grad():
            trainer.eval_results = dict(self.eval_fn())
        trainer.eval_iter = trainer.iter
        trainer.model.train()


class PeriodicCheckpoint(Callback):
    """Save ``model_<iter>`` every ``period`` iterations (0: never) and ``model_final`` at the
    end; keeps the newest ``max_to_keep`` periodic files (None: all). Runs on every rank
    (:meth:`Checkpointer.save` is collective; rank 0 writes)."""

    def __init__(
        self, checkpointer: Checkpointer, *, period: int = 0, max_to_keep: int | None = None
    ) -> None:
        self.checkpointer = checkpointer
        self.period = period
        self.max_to_keep = max_to_keep
        self._saved: list[Path] = []

    def after_step(self, trainer: Trainer) -> None:
        if self.period > 0 and trainer.iter % self.period == 0 and trainer.iter < trainer.max_iters:
            self._saved.append(
                self.checkpointer.save(f"model_{trainer.iter:07d}", iteration=trainer.iter)
            )
            while self.max_to_keep is not None and len(self._saved) > self.max_to_keep:
                old = self._saved.pop(0)
                if is_main_process() and old.exists():
                    old.unlink()

    def after_train(self, trainer: Trainer) -> None:
        if trainer.iter >= trainer.max_iters:
            self.checkpointer.save("model_final", iteration=trainer.iter)


class JSONMetricsWriter(Callback):
    """Append one JSON object per line to ``path`` (rank 0): every ``trainer.log_period``
    iterations ``{"iter", <loss terms>, "total_loss", "lr", "time", "data_time"}`` (means over
    the window), and ``"eval": {...}`` on iterations where an evaluation ran."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._window: list[dict[str, float]] = []
        self._file: Any = None
        self._eval_written = -1

    def before_train(self, trainer: Trainer) -> None:
        """Open for appending, first dropping records past ``trainer.iter`` (left by a run that
        died after its last checkpoint, or by an older run in the same folder)."""
        if not is_main_process():
            return
        if self.path.is_file():
            keep = [r for r in _read_jsonl(self.path) if r.get("iter", 0) <= trainer.iter]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a")

    def after_step(self, trainer: Trainer) -> None:
        self._window.append(trainer.metrics)
        record: dict[str, Any] = {}
        if trainer.iter % trainer.log_period == 0 or trainer.iter >= trainer.max_iters:
            record.update(window_mean(self._window))
            self._window = []
        if trainer.eval_iter == trainer.iter:
            record["eval"] = trainer.eval_results
            self._eval_written = trainer.iter
        self._write(trainer.iter, record)

    def after_train(self, trainer: Trainer) -> None:
        if trainer.eval_iter >= 0 and trainer.eval_iter != self._eval_written:
            self._write(trainer.eval_iter, {"eval": trainer.eval_results})  # the final evaluation
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, it: int, record: dict[str, Any]) -> None:
        if record and self._file is not None:
            self._file.write(json.dumps({"iter": it, **record}, default=float) + "\n")
            self._file.flush()


class TensorBoardWriter(Callback):
    """Scalars to TensorBoard (rank 0) every ``trainer.log_period`` iterations, plus numeric
    eval results (nested dict keys joined by ``/``)."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None
        self._window: list[dict[str, float]] = []
        self._eval_written = -1

    def before_train(self, trainer: Trainer) -> None:
        if is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))

    def after_step(self, trainer: Trainer) -> None:
        if self._writer is None:
            return
        self._window.append(trainer.metrics)
        if trainer.iter % trainer.log_period == 0:
            for k, v in window_mean(self._window).items():
                self._writer.add_scalar(f"train/{k}", v, trainer.iter)
            self._window = []
        self._write_eval(trainer)

    def after_train(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._write_eval(trainer)
            self._writer.close()
            self._writer = None

    def _write_eval(self, trainer: Trainer) -> None:
        if trainer.eval_iter >= 0 and trainer.eval_iter != self._eval_written:
            for k, v in _flatten(trainer.eval_results, "eval").items():
                self._writer.add_scalar(k, v, trainer.eval_iter)
            self._eval_written = trainer.eval_iter


class ProgressBar(Callback):
    """Progress on rank 0 (:mod:`instseg.utils.progress`): a tqdm bar when stderr is a terminal,
    else a plain line every ``every`` iterations (default: ``INSTSEG_LOG_EVERY`` when set, else
    ``trainer.log_period``, 20 by default) with the iteration, the loss terms and lr (means over
    those iterations), it/s and the ETA. ``enabled=False``: nothing."""

    def __init__(self, *, enabled: bool = True, every: int | None = None) -> None:
        self.enabled = enabled
        self.every = every
        self._bar: Any = None
        self._window: list[dict[str, float]] = []

    def before_train(self, trainer: Trainer) -> None:
        if self.enabled and is_main_process():
            from instseg.utils.progress import Progress, env_every

            self._bar = Progress(
                total=trainer.max_iters, initial=trainer.iter, desc="train", unit="it",
                every=self.every or env_every() or trainer.log_period,
            )  # fmt: skip

    def after_step(self, trainer: Trainer) -> None:
        if self._bar is None:
            return
        self._window.append(trainer.metrics)
        every = self._bar.every
        if trainer.iter % every == 0 or trainer.iter >= trainer.max_iters:
            m = window_mean(self._window)
            self._window = []
            losses = {k: v for k, v in m.items() if k not in ("lr", "time", "data_time")}
            self._bar.set_postfix(**losses, lr=trainer.metrics.get("lr", float("nan")))
        self._bar.update(1)

    def after_train(self, trainer: Trainer) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices). With ``deterministic``, also ask torch for
    deterministic kernels (warn-only) and turn off cuDNN autotuning. Under DDP pass a
    rank-dependent seed for data augmentation but build the model before (DDP broadcasts
    rank 0's weights anyway)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch to ``device``: objects with ``.to`` (Tensor, Batch), dicts, lists, tuples."""
    if hasattr(batch, "to") and not isinstance(batch, nn.Module):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def images_channels_last(batch: Any) -> Any:
    """The batch with every 4-D ``images`` tensor in NHWC memory (``Batch``, a dataclass of
    batches such as ``ClipBatch``, or tuples of them); other fields untouched."""
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {}
        for f in dataclasses.fields(batch):
            v = getattr(batch, f.name)
            if f.name == "images" and isinstance(v, Tensor) and v.dim() == 4:
                changes[f.name] = v.contiguous(memory_format=torch.channels_last)
            elif dataclasses.is_dataclass(v) or isinstance(v, tuple):
                changes[f.name] = images_channels_last(v)
        return dataclasses.replace(batch, **changes) if changes else batch
    if isinstance(batch, tuple):
        return tuple(images_channels_last(v) for v in batch)
    return batch


def window_mean(window: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over the logged steps of a window."""
    keys = {k for m in window for k in m}
    return {k: float(np.mean([m[k] for m in window if k in m])) for k in sorted(keys)}


def _read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a line cut short by a crash is skipped."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _flatten(d: dict, prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _is_ddp(model: nn.Module) -> bool:
    return isinstance(model, DistributedDataParallel)
