"""One progress reporter for every long loop (training, inference, inpainting).

On a terminal it is a tqdm bar. When the stream is not a terminal (output redirected to a file,
a CI log, ``nohup``) a bar would print nothing useful, so it writes a plain line every ``every``
steps and one at the end, like detectron2's logger::

    train 40/1000 (4%)  total_loss=1.03 lr=0.00996  2.47 it/s  elapsed 0:00:16  ETA 0:06:28

``every`` defaults to the environment variable ``INSTSEG_LOG_EVERY``, else 20. Usage mirrors
tqdm (``disable=``, ``update``, ``set_postfix``, ``write``, ``close``), so replacing a tqdm call
is a one-word change::

    for batch in progress(loader, total=len(loader), desc="inference", unit="img"): ...

    bar = progress(total=max_iters, initial=start, desc="train")
    bar.update(1); bar.set_postfix(loss=0.5, lr=1e-3); bar.close()
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

__all__ = [
    "DEFAULT_EVERY",
    "Progress",
    "default_every",
    "env_every",
    "format_duration",
    "progress",
]

DEFAULT_EVERY = 20


def env_every() -> int | None:
    """``INSTSEG_LOG_EVERY`` as a positive int (None when unset or not a number)."""
    value = os.environ.get("INSTSEG_LOG_EVERY", "").strip()
    try:
        return max(1, int(value)) if value else None
    except ValueError:
        return None


def default_every() -> int:
    """``INSTSEG_LOG_EVERY`` (a positive int) or :data:`DEFAULT_EVERY`."""
    return env_every() or DEFAULT_EVERY


def format_duration(seconds: float) -> str:
    """Seconds -> ``H:MM:SS`` (days as ``1 day, H:MM:SS``)."""
    return str(datetime.timedelta(seconds=max(0, round(seconds))))


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """Progress of a loop: a tqdm bar on a terminal, else a line every ``every`` steps.

    Args:
        iterable: what to iterate (optional; else call :meth:`update`).
        total: number of steps (default ``len(iterable)`` when it has one); without it there is
            no percentage and no ETA.
        desc: label at the start of the line / bar (e.g. ``"train"``, ``"predict"``).
        unit: step unit (``"it"``, ``"img"``, ``"frame"``).
        every: steps between plain lines (default :func:`default_every`).
        initial: steps already done (a resumed run); the rate counts only this run's steps.
        stream: where to write (default ``sys.stderr`` at construction).
        disable: write nothing (tqdm's name).
        tty: force the bar (True) or the lines (False); default: ``stream.isatty()``.
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        every: int | None = None,
        initial: int = 0,
        stream: TextIO | None = None,
        disable: bool = False,
        tty: bool | None = None,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc, self.unit = desc, unit
        self.every = max(1, int(every)) if every else default_every()
        self.n = self.initial = int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self.disable = disable
        self.postfix: dict[str, Any] = {}
        self._start = time.perf_counter()
        self._last_line = self.n
        self._closed = False
        self._bar: Any = None
        if not disable and (_is_tty(self.stream) if tty is None else tty):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=desc or None, unit=unit,
                file=self.stream, dynamic_ncols=True,
            )  # fmt: skip

    @property
    def mode(self) -> str:
        """``"off"``, ``"bar"`` (tqdm) or ``"lines"``."""
        return "off" if self.disable else ("bar" if self._bar is not None else "lines")

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("Progress: nothing to iterate (no iterable given)")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        except BaseException:  # an error or a break: no final line (the error is the news)
            self.close(final_line=False)
            raise
        self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """``n`` more steps done; a plain line when a multiple of ``every`` is crossed."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif not self.disable and self.n // self.every > self._last_line // self.every:
            self._line()

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the count (losses, lr, ...); floats with 4 significant digits."""
        self.postfix = dict(values)
        if self._bar is not None:
            self._bar.set_postfix({k: _fmt(v) for k, v in values.items()}, refresh=False)

    def write(self, message: str) -> None:
        """A message line that does not break the bar."""
        if self.disable:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def close(self, *, final_line: bool = True) -> None:
        """Close the bar, or write the final line (if steps were done since the last one and
        ``final_line``)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif final_line and not self.disable and self.n != self._last_line:
            self._line()

    def rate(self) -> float:
        """Steps per second of this run (0 before the first step)."""
        elapsed = time.perf_counter() - self._start
        done = self.n - self.initial
        return done / elapsed if elapsed > 0 and done > 0 else 0.0

    def line(self) -> str:
        """The plain line for the current state."""
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc} {count}".strip()]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if self.postfix:
            parts.append(" ".join(f"{k}={_fmt(v)}" for k, v in self.postfix.items()))
        rate = self.rate()
        parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {format_duration(time.perf_counter() - self._start)}")
        if self.total:
            left = max(self.total - self.n, 0)
            parts.append(f"ETA {format_duration(left / rate) if rate > 0 else '?'}")
        return "  ".join(parts)

    def _line(self) -> None:
        self._last_line = self.n
        self.stream.write(self.line() + "\n")
        self.stream.flush()


def progress(iterable: Iterable[Any] | None = None, **kw: Any) -> Progress:
    """``Progress(iterable, **kw)``: see :class:`Progress`."""
    return Progress(iterable, **kw)
