"""Progress that reads well where it goes: a bar on a terminal, a log line per step of
``every_percent`` anywhere else.

A stage's output usually goes to a pipe (DVC, Prefect's logs, CI, a file). There a bar's
redraws are noise, or one endless line of carriage returns that shows nothing until the bar
closes; a line at 10 %, 20 %, … with the rate and what is left says how far it got.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("bvae.progress")


class LineProgress:
    """The part of tqdm's interface bvae uses (``update``, ``set_postfix``, iteration, context
    manager), logging one INFO line each time another ``every_percent`` of ``total`` is done
    (with no ``total``: every ``every_s`` seconds)."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: float | None = None,
        initial: float = 0,
        desc: str = "",
        unit: str = "it",
        every_percent: float = 10.0,
        every_s: float = 30.0,
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.count, self.desc, self.unit = total, initial, desc or "progress", unit
        self.every_percent, self.every_s = every_percent, every_s
        self.started, self.start_count = time.monotonic(), initial
        self.next_mark = self._mark_after(initial)
        self.last_line = self.started
        self.postfix: dict[str, Any] = {}

    def _mark_after(self, count: float) -> float:
        if not self.total:
            return float("inf")
        done = 100.0 * count / self.total
        return (int(done // self.every_percent) + 1) * self.every_percent

    def update(self, n: float = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self.total:
            if 100.0 * self.count / self.total >= self.next_mark:
                self._line(now)
                self.next_mark = self._mark_after(self.count)
        elif now - self.last_line >= self.every_s:
            self._line(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def _line(self, now: float) -> None:
        self.last_line = now
        elapsed = max(now - self.started, 1e-9)
        rate = (self.count - self.start_count) / elapsed
        done = f"{self.count:,.0f}/{self.total:,.0f}" if self.total else f"{self.count:,.0f}"
        parts = [f"{done} {self.unit}"]
        parts.append(f"{rate:,.1f} {self.unit}/s")
        if self.total and rate > 0 and self.count < self.total:
            parts.append(f"{(self.total - self.count) / rate:,.0f} s left")
        parts += [f"{key} {value}" for key, value in self.postfix.items()]
        percent = f"{100.0 * self.count / self.total:3.0f}% " if self.total else ""
        log.info("%s: %s(%s)", self.desc, percent, ", ".join(parts))

    def close(self) -> None:
        pass

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)


def progress(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    initial: float = 0,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    unit_scale: bool = False,
    every_percent: float = 10.0,
    stream=None,
):
    """A tqdm bar when ``stream`` (stderr) is a terminal; else a :class:`LineProgress`; nothing
    with ``disable``."""
    stream = stream or sys.stderr
    if disable or not hasattr(stream, "isatty") or stream.isatty():
        from tqdm import tqdm

        return tqdm(
            iterable,
            total=total,
            initial=initial,
            desc=desc or None,
            unit=unit,
            unit_scale=unit_scale,
            disable=disable,
            mininterval=1.0,
        )
    return LineProgress(
        iterable, total=total, initial=initial, desc=desc, unit=unit, every_percent=every_percent
    )
