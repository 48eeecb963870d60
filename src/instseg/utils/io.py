"""Atomic writes (write to a temp file in the same folder, fsync, rename) and safe readers."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from instseg.utils.errors import InvalidInputError, MissingFileError

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "require_lists",
]


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename the temp file over ``path``.

    A crash before the rename leaves the old file untouched; readers never see a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, obj: Any, **kw: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, **kw))


def read_json(path: str | Path) -> Any:
    """Read JSON with an error that names the file and the problem (a
    :class:`~instseg.utils.errors.UserError`: MissingFileError / InvalidInputError)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InvalidInputError(
            f"{path}: invalid JSON ({e.msg} at line {e.lineno} col {e.colno})"
        ) from e
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{path}: not a JSON text file ({e.reason})") from e


def require_lists(
    data: Any, source: str, keys: Sequence[str], *, fmt: str = "COCO format"
) -> dict[str, Any]:
    """``data`` (a parsed JSON file) if it is an object whose ``keys`` are lists, else a
    ``ValueError`` naming ``source`` (the file), the problem and the expected ``fmt``."""
    if not isinstance(data, dict):
        raise ValueError(
            f"{source}: top level must be a JSON object ({fmt}), got {type(data).__name__}"
        )
    for key in keys:
        if not isinstance(data.get(key), list):
            raise ValueError(f"{source}: missing or invalid key '{key}' ({fmt})")
    return data
