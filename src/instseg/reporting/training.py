"""The training section: the config that produced the run (its ``# precision:`` line first),
loss and AP curves from ``metrics.jsonl`` (else the TensorBoard events in ``tb/``), and a short
summary table."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from instseg.reporting.embed import figure_data_uri
from instseg.reporting.table import Table, format_value

__all__ = ["History", "TrainingSection", "read_history", "read_training"]

Series = dict[str, list[tuple[int, float]]]


@dataclass
class History:
    """``train``: loss terms, ``total_loss``, ``lr``, ``time`` ... per logged iteration;
    ``eval``: flattened evaluation numbers (``segm/AP``, ``amodal/segm/AP`` ...) per evaluated
    iteration; ``source``: the file they came from."""

    train: Series = field(default_factory=dict)
    eval: Series = field(default_factory=dict)
    source: str = ""


@dataclass
class TrainingSection:
    config_text: str | None
    config: dict[str, Any] | None
    precision: str | None
    command: str | None
    history: History
    curves: str | None  # PNG data URI
    summary: Table


def read_training(folder: Path) -> TrainingSection | None:
    """The section for a run folder, None when it has no ``config.yaml``, ``metrics.jsonl`` nor
    TensorBoard events. A ``config.yaml`` that is not YAML raises ``ValueError`` naming it."""
    cfg_path = folder / "config.yaml"
    history = read_history(folder)
    if not cfg_path.is_file() and not history.train and not history.eval:
        return None
    text = cfg_path.read_text() if cfg_path.is_file() else None
    config, precision, command = None, None, None
    if text is not None:
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{cfg_path}: not valid YAML ({e})") from None
        if not isinstance(config, dict):
            raise ValueError(f"{cfg_path}: expected a mapping at the top level")
        first = text.splitlines()[0] if text.strip() else ""
        if first.startswith("# precision:"):
            precision = first[len("# precision:") :].strip()
        command = f"instseg train {cfg_path}"
    return TrainingSection(
        config_text=text,
        config=config,
        precision=precision,
        command=command,
        history=history,
        curves=plot_curves(history),
        summary=summary_table(history),
    )


def read_history(folder: Path) -> History:
    """Training / eval series of ``folder/metrics.jsonl`` (bad lines skipped), else of the
    TensorBoard event files under ``folder/tb``; empty when neither exists."""
    log = folder / "metrics.jsonl"
    if log.is_file():
        return _history_from_jsonl(log)
    events = (
        sorted((folder / "tb").glob("events.out.tfevents.*")) if (folder / "tb").is_dir() else []
    )
    if events:
        return _history_from_tensorboard(folder / "tb")
    return History()


def _history_from_jsonl(path: Path) -> History:
    train: Series = defaultdict(list)
    ev: Series = defaultdict(list)
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or "iter" not in rec:
            continue
        it = int(rec["iter"])
        for k, v in rec.items():
            if k == "eval" and isinstance(v, dict):
                for name, x in _flatten(v).items():
                    ev[name].append((it, x))
            elif k != "iter" and _is_number(v):
                train[k].append((it, float(v)))
    return History(dict(train), dict(ev), str(path))


def _history_from_tensorboard(log_dir: Path) -> History:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    train: Series = {}
    ev: Series = {}
    for tag in acc.Tags().get("scalars", []):
        points = [(int(e.step), float(e.value)) for e in acc.Scalars(tag)]
        if tag.startswith("train/"):
            train[tag[len("train/") :]] = points
        elif tag.startswith("eval/"):
            ev[tag[len("eval/") :]] = points
    return History(train, ev, str(log_dir))


def plot_curves(history: History) -> str | None:
    """Loss terms (log scale) and the AP series, side by side, as a PNG data URI; None when
    there is nothing to plot."""
    losses = {k: v for k, v in history.train.items() if k == "total_loss" or k.startswith("loss")}
    aps = {  # segm / bbox AP, and segm AP of the other groups (amodal, occluded, ...)
        k: v
        for k, v in history.eval.items()
        if k in ("segm/AP", "bbox/AP") or (k.endswith("/segm/AP") and k.count("/") == 2)
    }
    if not losses and not aps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
    for k, pts in sorted(losses.items(), key=lambda kv: kv[0] != "total_loss"):
        xs, ys = zip(*pts, strict=True)
        ax[0].plot(xs, ys, label=k, linewidth=2.0 if k == "total_loss" else 1.0)
    ax[0].set_xlabel("iteration")
    ax[0].set_ylabel("loss")
    if losses and all(y > 0 for pts in losses.values() for _, y in pts):
        ax[0].set_yscale("log")
    if losses:
        ax[0].legend(fontsize=7)
    for k, pts in sorted(aps.items())[:8]:
        xs, ys = zip(*pts, strict=True)
        ax[1].plot(xs, ys, "o-", label=k, markersize=3)
    ax[1].set_xlabel("iteration")
    ax[1].set_ylabel("AP (held-out, %)")
    if aps:
        ax[1].legend(fontsize=7)
    else:
        ax[1].text(0.5, 0.5, "no evaluation logged", ha="center", va="center")
    fig.tight_layout()
    return figure_data_uri(fig)


def summary_table(history: History) -> Table:
    """Last iteration, final total loss, mean seconds per iteration, last learning rate, and
    the last evaluation's segm / bbox AP."""
    rows: list[list[str]] = []

    def last(series: Series, key: str) -> float | None:
        pts = series.get(key)
        return pts[-1][1] if pts else None

    iters = [it for pts in history.train.values() for it, _ in pts]
    if iters:
        rows.append(["iterations", str(max(iters))])
    for label, key in (("final total loss", "total_loss"), ("final learning rate", "lr")):
        v = last(history.train, key)
        if v is not None:
            rows.append([label, f"{v:.4g}"])
    times = [v for _, v in history.train.get("time", [])]
    if times:
        rows.append(["mean seconds / iteration", f"{sum(times) / len(times):.3f}"])
    for key in ("segm/AP", "bbox/AP"):
        pts = history.eval.get(key)
        if pts:
            rows.append([f"{key} at iteration {pts[-1][0]}", format_value(pts[-1][1])])
    return Table("Training summary", ["", "value"], rows, note=f"from {history.source}")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        elif _is_number(v):
            out[key] = float(v)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isinf(v)
