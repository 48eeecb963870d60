"""Atomic, resumable checkpoints that load with ``torch.load(weights_only=True)`` only.

A training checkpoint ``<save_dir>/<name>.pth`` is a dict::

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "iteration": int,              # completed iterations = the iteration to resume at
     "rng_states": [rng_state per rank], **extra}

where an RNG state is ``{"python": {...}, "numpy": {...}, "torch": ByteTensor, "cuda": ByteTensor}``
(the CUDA state of the rank's current device, present once CUDA is initialised)
holding only tensors, ints, floats and strings. ``<save_dir>/last_checkpoint`` names the newest
file. Both are written to a temp file in the same folder and renamed (``os.replace``), so a crash
during a save leaves the previous checkpoint and pointer intact.

Files that need the full pickle machinery (arbitrary Python objects) are never unpickled: they
raise :class:`UntrustedCheckpointError`.
"""

from __future__ import annotations

import logging
import pickle
import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from instseg.engine.distributed import all_gather_object, get_rank, is_main_process, unwrap_model
from instseg.utils.errors import MissingFileError, UserError
from instseg.utils.io import atomic_write, atomic_write_text

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "UntrustedCheckpointError",
    "get_rng_state",
    "load_checkpoint_file",
    "load_model_weights",
    "save_weights",
    "set_rng_state",
]

POINTER = "last_checkpoint"

log = logging.getLogger(__name__)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file is missing, corrupt or does not match the model (a
    :class:`~instseg.utils.errors.UserError`: the message names the file)."""


class UntrustedCheckpointError(CheckpointError):
    """A file that cannot be loaded with ``weights_only=True`` (it may run arbitrary code)."""


class Checkpointer:
    """Save and restore model / optimizer / scheduler / AMP scaler / RNG / iteration.

    Under DDP, :meth:`save` is collective (every rank calls it: the RNG states of all ranks are
    gathered) and only rank 0 writes. :meth:`resume_or_load` is called on every rank.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any | None = None,
        scaler: torch.amp.GradScaler | None = None,
        ema: Any | None = None,
        save_dir: str | Path,
    ) -> None:
        self.model = model
        self.ema = ema  # a ModelEMA (state_dict / load_state_dict), saved under "ema"
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.save_dir = Path(save_dir)

    def save(self, name: str, **extra: Any) -> Path:
        """Write ``<save_dir>/<name>.pth`` atomically and point ``last_checkpoint`` at it.

        ``extra`` (e.g. ``iteration=1000``) is stored at the top level; it must hold only
        tensors, numbers, strings, None and lists/tuples/dicts of those.
        """
        _check_plain(extra, "extra")
        path = self.save_dir / f"{name}.pth"
        rng_states = all_gather_object(get_rng_state())
        if not is_main_process():
            return path
        data: dict[str, Any] = {"model": _cpu_state(unwrap_model(self.model).state_dict())}
        for key in ("optimizer", "scheduler", "scaler", "ema"):
            obj = getattr(self, key)
            if obj is not None:
                data[key] = obj.state_dict()
        data["rng_states"] = rng_states
        data.update(extra)
        atomic_write(path, lambda p: torch.save(data, p))
        atomic_write_text(self.save_dir / POINTER, path.name + "\n")
        return path

    def has_checkpoint(self) -> bool:
        return (self.save_dir / POINTER).is_file()

    def get_checkpoint_file(self) -> Path:
        """The file named by ``<save_dir>/last_checkpoint``."""
        pointer = self.save_dir / POINTER
        name = pointer.read_text().strip()
        path = self.save_dir / name
        if not name or not path.is_file():
            raise CheckpointError(f"{pointer}: points to {name!r}, which does not exist")
        return path

    def load(self, path: str | Path) -> int:
        """Restore everything from a training checkpoint; returns the iteration to resume at."""
        data = load_checkpoint_file(path)
        if not isinstance(data, Mapping) or "model" not in data:
            raise CheckpointError(f"{path}: not a training checkpoint (no 'model' entry)")
        _load_state(unwrap_model(self.model), data["model"], strict=True, source=str(path))
        for key in ("optimizer", "scheduler", "scaler", "ema"):
            obj = getattr(self, key)
            if obj is None:
                continue
            if key not in data:
                raise CheckpointError(f"{path}: has no '{key}' state to resume from")
            obj.load_state_dict(data[key])
        states = data.get("rng_states") or []
        if states:
            set_rng_state(states[get_rank()] if get_rank() < len(states) else states[0])
        return int(data.get("iteration", 0))

    def resume_or_load(self, path: str | Path | None = None, resume: bool = True) -> int:
        """Resume from ``last_checkpoint`` if ``resume`` and one exists (full state); otherwise
        load model weights from ``path`` if given. Returns the iteration to start at."""
        if resume and self.has_checkpoint():
            return self.load(self.get_checkpoint_file())
        if path is not None:
            load_model_weights(unwrap_model(self.model), path)
        return 0


def load_checkpoint_file(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise UntrustedCheckpointError(
            f"{path}: refused to load: it cannot be read with torch.load(weights_only=True) "
            f"({detail}). The file holds arbitrary Python objects (unpickling it could run code) "
            "or is not a PyTorch checkpoint. instseg only loads tensors, numbers and strings; "
            "if you trust the file, re-save its state_dict with a trusted tool."
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({e})") from e


def load_model_weights(
    model: nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    modules: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Load a plain weight file (a state_dict or ``{"model": state_dict}``) into ``model``.

    A ``module.`` prefix on every key (a DDP save) is stripped. With ``strict`` any missing key,
    unexpected key or shape mismatch raises :class:`CheckpointError` listing them; otherwise
    they are skipped with one warning, and one INFO log line (logger ``instseg.engine.checkpoint``)
    says per top-level module what was loaded and what was not, e.g. ``loaded: backbone (198
    tensors), detector (40 tensors); not loaded: mask_head (12 tensors)`` (a non-strict load
    matches by name: a head whose names differ from the file's starts from scratch). Returns
    ``(missing_keys, unexpected_keys)``.

    ``modules`` (top-level module names, e.g. ``["backbone", "detector"]``) loads only those
    modules' tensors from the file (the others keep their initialisation; implies a non-strict
    load): ablations whose variants must all start their heads from scratch use it.
    """
    data = load_checkpoint_file(path)
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a state_dict or {{'model': state_dict}}")
    if modules is not None:
        children = dict(model.named_children())
        unknown = [m for m in modules if m not in children]
        if unknown:
            raise CheckpointError(
                f"{path}: no module {unknown} to load into {type(model).__name__} "
                f"(top-level modules: {', '.join(children)})"
            )
        data = {k: v for k, v in data.items() if k.removeprefix("module.").split(".")[0] in modules}
        strict = False
    return _load_state(model, data, strict=strict, source=str(path))


def save_weights(
    model: nn.Module, path: str | Path, *, half: bool = False, meta: dict | None = None
) -> Path:
    """Write ``{"model": state_dict, "meta": meta}`` atomically (a small release file).

    With ``half``, floating-point tensors are stored as float16 (load_model_weights casts them
    back to the parameters' dtype). ``meta`` must hold only plain values.
    """
    meta = dict(meta or {})
    _check_plain(meta, "meta")
    state = _cpu_state(unwrap_model(model).state_dict())
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    data = {"model": state, "meta": meta}
    return atomic_write(Path(path), lambda p: torch.save(data, p))


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) RNG states in a weights_only-loadable form."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this rank's current device only
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _load_state(
    model: nn.Module, state: Mapping[str, Tensor], *, strict: bool, source: str
) -> tuple[list[str], list[str]]:
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape_bad = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    problems = [
        f"{label} ({len(items)}): {_short(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shape_bad),
        )
        if items
    ]
    if problems and strict:
        raise CheckpointError(f"{source}: weights do not match the model; " + "; ".join(problems))
    if problems:
        warnings.warn(f"{source}: loading non-strictly; " + "; ".join(problems), stacklevel=3)
    bad = {s.split(":")[0] for s in shape_bad}
    model.load_state_dict({k: v for k, v in state.items() if k not in bad}, strict=False)
    if not strict:
        log.info("%s", _load_summary(own, state, bad, source=source))
    return missing, unexpected


def _load_summary(
    own: Mapping[str, Tensor], state: Mapping[str, Tensor], bad: set[str], *, source: str
) -> str:
    """One line: per top-level module, how many of the model's tensors were loaded from
    ``state`` and how many were not (missing or shape mismatch), and the file's tensors the
    model has no place for."""

    def top(key: str) -> str:
        return key.split(".", 1)[0]

    loaded: dict[str, int] = {}
    total: dict[str, int] = {}
    for k in own:
        total[top(k)] = total.get(top(k), 0) + 1
        if k in state and k not in bad:
            loaded[top(k)] = loaded.get(top(k), 0) + 1
    unused: dict[str, int] = {}
    for k in state:
        if k not in own:
            unused[top(k)] = unused.get(top(k), 0) + 1

    def count(n: int, of: int) -> str:
        return f"{n} tensors" if n == of else f"{n} of {of} tensors"

    ok = [f"{m} ({count(loaded[m], total[m])})" for m in total if loaded.get(m)]
    not_ok = [
        f"{m} ({count(total[m] - loaded.get(m, 0), total[m])})"
        for m in total
        if loaded.get(m, 0) < total[m]
    ]
    parts = [
        f"loaded: {', '.join(ok) or 'nothing'}",
        f"not loaded: {', '.join(not_ok) or 'nothing'}",
    ]
    if unused:
        parts.append("unused from the file: " + ", ".join(f"{m} ({n})" for m, n in unused.items()))
    return f"{source}: " + "; ".join(parts)


def _short(items: list[str], n: int = 8) -> str:
    head = ", ".join(items[:n])
    return head + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def _cpu_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


_PLAIN = (Tensor, int, float, bool, str, bytes, type(None), torch.Size, torch.dtype)


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError if ``obj`` holds anything weights_only loading would refuse (exact types:
    a ``str`` subclass such as ``torch.__version__`` is refused)."""
    if isinstance(obj, Tensor) or type(obj) in _PLAIN:
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} must be str or int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where}: {type(obj).__name__} cannot be stored in a checkpoint (only tensors, numbers, "
        "strings, None and lists/tuples/dicts of them load with weights_only=True)"
    )
