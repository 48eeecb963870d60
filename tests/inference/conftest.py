"""Shared checks for the model files the project ships under src/instseg/weights/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture
def release_file() -> Callable[[Path], dict[str, Any]]:
    """-> check(path): the file is under 20 MiB, loads with ``weights_only=True`` into
    ``{"model", "meta"}``, its floating tensors are all fp16 and a model card (.md) sits
    beside it; returns the loaded object for file-specific checks."""

    def check(path: Path) -> dict[str, Any]:
        assert path.stat().st_size < 20 * 2**20
        obj = torch.load(path, weights_only=True)
        assert {"model", "meta"} <= set(obj)
        floats = [v for v in obj["model"].values() if v.is_floating_point()]
        assert floats and all(v.dtype == torch.float16 for v in floats)
        assert path.with_suffix(".md").is_file()  # the model card
        return obj

    return check
