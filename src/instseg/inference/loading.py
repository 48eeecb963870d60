"""Rebuild a trained model from a weights file (``model.pt``) written by train/demo.

The file format and its typed meta are :mod:`instseg.engine.weights`'s; ``meta.model`` says which
zoo model to build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from instseg.engine.weights import WeightsMeta, read_weights_file
from instseg.utils.errors import InvalidInputError

__all__ = ["load_exact_state", "load_trained_model"]


def load_trained_model(
    path: str | Path, *, device: torch.device | str = "cpu", **model_kw: Any
) -> tuple[torch.nn.Module, WeightsMeta]:
    """Build the zoo model named in the file's meta, load weights (fp16 files are cast back to
    fp32), put it in eval mode on ``device``. ``model_kw`` go to the zoo builder (e.g.
    ``fixed_num_detections`` for export)."""
    from instseg.config import from_dict
    from instseg.models.build import ModelConfig, build_model_from_config

    state, meta = read_weights_file(path, task="image")
    mcfg = from_dict(ModelConfig, meta.model, where=str(path))
    model = build_model_from_config(mcfg, num_classes=meta.num_classes, **model_kw)
    load_exact_state(model, state, source=f"{path} (model '{mcfg.name}')")
    return model.to(device).eval(), meta


def load_exact_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str
) -> None:
    """Load ``state`` into ``model``: fp16 release tensors are cast to the parameters' dtypes;
    any missing or unexpected key is an error naming ``source``."""
    ref = model.state_dict()
    state = {
        k: (v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v)
        for k, v in state.items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InvalidInputError(
            f"{source}: weights do not match the model: "
            f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )
