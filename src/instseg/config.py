"""Dataclass configs: YAML files, at most one ``_base_`` file, and ``key.sub=value`` overrides.

Every config is a tree of dataclasses with commented defaults. Loading is strict: an unknown key
or a value of the wrong type raises :class:`ConfigError` naming the key (and the file).

Example::

    cfg = load_config(TrainConfig, "configs/demo.yaml", ["solver.lr=0.01", "model.head=bilayer"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from instseg.utils.errors import UserError

T = TypeVar("T")

__all__ = ["ConfigError", "load_config", "from_dict", "to_dict", "apply_overrides", "dump_config"]


class ConfigError(UserError, ValueError):
    """A config file or override is invalid (unknown key, wrong type, bad YAML); a
    :class:`~instseg.utils.errors.UserError` (one line from the CLI)."""


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Build ``cls`` from defaults, then the YAML file at ``path`` (and its ``_base_``), then
    ``overrides`` (``"a.b=value"`` strings, values parsed as YAML scalars/lists)."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_with_base(Path(path))
    cfg = from_dict(cls, data, where=str(path) if path else "<defaults>")
    return apply_overrides(cfg, overrides or [])


def read_yaml_with_base(path: Path, depth: int = 0) -> dict[str, Any]:
    """The mapping of a YAML config file merged over its ``_base_`` (one level at most)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("_base_", None)
    if base is None:
        return data
    if depth >= 1:
        raise ConfigError(f"{path}: a base file may not have a base of its own (one level only)")
    merged = read_yaml_with_base((path.parent / base).resolve(), depth + 1)
    return _deep_merge(merged, data)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "<dict>", prefix: str = "") -> T:
    """Recursively build dataclass ``cls`` from a plain dict, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{prefix or cls.__name__}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)} "
            f"(valid: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(hints[k], v, where=where, key=prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, *, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where=where, key=key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: {key}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: {key} must have {len(args)} items, got {value!r}")
            return tuple(
                _coerce(a, v, where=where, key=key) for a, v in zip(args, value, strict=False)
            )
        inner = args[0] if args else Any
        items = [_coerce(inner, v, where=where, key=key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true/false, got {value!r}")
    if tp in (int, float, str) and (not isinstance(value, tp) or isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be {tp.__name__}, got {value!r}")
    return value


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Return a copy of ``cfg`` with ``"a.b.c=value"`` overrides applied (strict)."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override '{item}': unknown key '{key}'")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"override '{item}': unknown key '{key}'")
        if isinstance(value, (int, float)) and isinstance(node[parts[-1]], str):
            value = raw  # keep strings that look like numbers as strings
        node[parts[-1]] = value
    return from_dict(type(cfg), data, where="<overrides>")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass tree -> plain dict (tuples become lists, suitable for YAML/JSON)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def dump_config(cfg: Any, path: str | Path, *, header: str = "") -> None:
    """Write ``cfg`` as YAML (atomically); ``header`` lines go first as ``#`` comments (facts of
    the run such as the resolved precision, which must not change what the file configures)."""
    from instseg.utils.io import atomic_write_text

    comments = "".join(f"# {line}\n" for line in header.splitlines())
    atomic_write_text(Path(path), comments + yaml.safe_dump(to_dict(cfg), sort_keys=False))
