"""Progress display: a live tqdm bar on a terminal, periodic plain lines anywhere else.

When the output stream is not a terminal (a log file, a pipe, CI), tqdm's carriage-return redraws pile up into
hundreds of kilobytes of one "line"; :class:`PlainProgress` prints instead one ordinary line at every tenth of the
total and at most every ``interval`` seconds in between, with the values the trainers pass to ``set_postfix``::

    rl 35/100 (35%) reward=0.512 acc=0.53 eval_acc=0.50 | 12.3 s elapsed, 2.84 it/s, ETA 22.9 s

Both have the methods the trainers call (``update``, ``set_postfix``, ``close``); tqdm is imported only when a
bar is shown.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

INTERVAL = 30.0  # seconds between two plain lines at most (besides the lines at each tenth of the total)


def progress_bar(total: int, desc: str, *, enabled: bool = True, initial: int = 0, interval: float = INTERVAL,
                 **options: Any) -> Any:
    """A live tqdm bar when the stream (``file=``, default stderr) is a terminal or a notebook, a
    :class:`PlainProgress` otherwise; None when ``enabled`` is false."""
    if not enabled:
        return None
    stream = options.get("file") or sys.stderr
    if not _is_terminal(stream) and "ipykernel" not in sys.modules:  # notebooks: tqdm.auto draws a widget
        return PlainProgress(total, desc, initial=initial, file=stream, unit=options.get("unit", "it"),
                             interval=interval)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, **options)


def quiet_library_bars(stream: Any = None) -> None:
    """When ``stream`` (default stderr) is not a terminal, ask the Hugging Face libraries not to draw their own
    bars (transformers' "Writing model shards", datasets' maps): the variables are read when those libraries are
    imported, so the command line calls this first. A variable already set is left as it is."""
    if _is_terminal(stream if stream is not None else sys.stderr) or "ipykernel" in sys.modules:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class PlainProgress:
    """Progress as plain lines (no carriage returns): one when created, one each time the count passes another
    tenth of ``total``, one when ``interval`` seconds passed since the last, and a last one on ``close``.

    A line that falls due in ``update`` is printed by the ``set_postfix`` that follows it (the trainers update
    first, then set the step's values), else by the next ``update`` or ``close``."""

    def __init__(self, total: int, desc: str, *, initial: int = 0, file: TextIO | None = None, unit: str = "it",
                 interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n = self._start = initial
        self.file = file if file is not None else sys.stderr
        self.postfix: dict[str, Any] = {}
        self._clock = clock
        self._t0 = self._last = clock()
        self._next_tenth = self._tenth_after(initial)
        self._due = False
        self._closed = False
        self._emit()

    def _tenth_after(self, n: int) -> int:
        """The smallest count past ``n`` that completes another tenth of the total."""
        if self.total <= 0:
            return sys.maxsize
        k = n * 10 // self.total + 1
        return -(-k * self.total // 10)  # ceil(k * total / 10)

    def update(self, n: int = 1) -> None:
        if self._due:  # due at the last update, and no set_postfix came to print it
            self._emit()
        self.n += n
        if self.n >= self._next_tenth:
            self._next_tenth = self._tenth_after(self.n)
            self._due = True
        elif self._clock() - self._last >= self.interval:
            self._due = True

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}
        if self._due:
            self._emit()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._due or self.n != self._printed_n:
                self._emit()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self) -> str:
        elapsed = self._clock() - self._t0
        done = self.n - self._start
        parts = [f"{self.desc} {self.n}/{self.total}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total > 0
                                                           else "")]
        parts += [f"{k}={_fmt(v)}" for k, v in self.postfix.items()]
        timing = f"{_duration(elapsed)} elapsed"
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            timing += f", {rate:.3g} {self.unit}/s" if rate < 1000 else f", {rate:.0f} {self.unit}/s"
            if self.total > self.n:
                timing += f", ETA {_duration((self.total - self.n) / rate)}"
        return " ".join(parts) + " | " + timing

    def _emit(self) -> None:
        self._due = False
        self._last = self._clock()
        self._printed_n = self.n
        try:
            print(self.line(), file=self.file, flush=True)
        except (ValueError, OSError):  # a closed or broken stream must not stop a run
            pass


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


__all__ = ["INTERVAL", "PlainProgress", "progress_bar", "quiet_library_bars"]
