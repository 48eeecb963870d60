"""Distributed helpers: one process per device, launched by ``torchrun``.

Every function is a no-op (or the single-process answer) when ``torch.distributed`` is not
initialised, so the same training script runs with ``python train.py`` and with
``torchrun --nproc_per_node=N train.py``.

Example::

    init_distributed()                      # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun
    model = wrap_ddp(model.to(device))      # DDP whose forward is ``model.loss(batch)``
    ...
    parts = all_gather_object(my_results)   # list with one entry per rank
    cleanup()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "LossForward",
    "all_gather_object",
    "barrier",
    "cleanup",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "reduce_dict",
    "unwrap_model",
    "wrap_ddp",
]


def init_distributed() -> bool:
    """Initialise the default process group from torchrun's environment variables.

    Uses NCCL when CUDA is available (and selects the GPU ``LOCAL_RANK``), gloo otherwise.
    Returns True when running with more than one process (or already initialised), False when
    the variables are absent or ``WORLD_SIZE`` is 1 (plain single-process run).
    """
    if is_distributed():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return False
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {name} is not set; launch with torchrun")
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(get_local_rank())
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank; returns a list indexed by rank."""
    world = get_world_size()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def reduce_dict(d: Mapping[str, Tensor | float]) -> dict[str, float]:
    """Mean of each scalar over all ranks (for logging); one collective, keys in sorted order.

    Every rank must pass the same keys. Values may be 0-dim tensors or Python numbers.
    """
    if not d:
        return {}
    keys = sorted(d)
    first = next((v for v in d.values() if isinstance(v, Tensor)), None)
    src = first.device if first is not None else torch.device("cpu")
    vals = torch.stack(
        [torch.as_tensor(d[k], device=src).detach().reshape(()).double() for k in keys]
    ).to(_comm_device())
    world = get_world_size()
    if world > 1:
        dist.all_reduce(vals)
        vals = vals / world
    return dict(zip(keys, vals.tolist(), strict=True))


class LossForward(nn.Module):
    """Makes ``model.loss(batch)`` the ``forward`` so DDP can hook it (gradient all-reduce).

    ``forward(batch) -> dict[str, Tensor]`` of scalar losses.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> dict[str, Tensor]:
        return self.model.loss(batch)


def wrap_ddp(model: nn.Module, *, find_unused_parameters: bool = False) -> nn.Module:
    """Wrap ``model`` (already on its device) in DDP when distributed; else return it unchanged.

    The returned DDP module's ``forward(batch)`` calls ``model.loss(batch)``; use
    :func:`unwrap_model` to get the plain model back (for ``predict``, checkpoints).
    """
    if get_world_size() == 1:
        return model
    device_ids = [torch.cuda.current_device()] if dist.get_backend() == "nccl" else None
    return DistributedDataParallel(
        LossForward(model), device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP and :class:`LossForward` wrappers."""
    while isinstance(model, (DistributedDataParallel, LossForward)):
        model = model.module if isinstance(model, DistributedDataParallel) else model.model
    return model


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
