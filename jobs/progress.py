"""Progress of a running grid: per cell, images done / total, the method being computed, images/s and ETA.

On a terminal each cell has a live bar (tqdm) and messages print above the bars; elsewhere (a log,
``ray job logs``) each change is a plain line, and a cell whose state has not changed repeats its line
every ``heartbeat_s`` so a long batch still shows the run is alive.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from tqdm import tqdm

__all__ = ["CellProgress", "GridProgress", "format_duration", "is_terminal"]


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that can show live bars (one that reports no width cannot)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


@dataclass
class CellProgress:
    name: str
    total: int
    done: int = 0  # images finished in this run (resumed ones count in ``skipped``)
    skipped: int = 0
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    status: str = "waiting"
    attempts: int = 0
    error: str | None = None
    methods: int = 1  # maps per image
    maps_done: int = 0  # (image, method) maps finished in this run: delivered, or reported by a worker's batch
    maps_delivered: int = 0  # of which the driver has the rows
    computing: tuple[str, ...] = ()  # the methods the cell's workers are computing now

    @property
    def elapsed(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def images_done(self) -> float:
        """Images finished in this run, counting an image's maps as they come (a method's share of an image)."""
        return max(self.done, self.maps_done / self.methods)

    @property
    def rate(self) -> float:
        """Images per second."""
        return self.images_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float:
        left = self.total - self.images_done - self.skipped
        return left / self.rate if self.rate > 0 else float("inf")

    def activity(self) -> str:
        """What the cell is doing, beyond its images done: maps of unfinished images, the methods computed now."""
        parts = []
        if self.methods > 1 and self.maps_done > self.done * self.methods:
            parts.append(f"{self.maps_done}/{(self.total - self.skipped) * self.methods} maps")
        if self.computing:
            parts.append("computing " + ", ".join(self.computing))
        return ", ".join(parts)

    def state(self) -> tuple[object, ...]:
        """What a new line would tell (time aside)."""
        return self.done, self.skipped, self.maps_done, self.computing, self.status

    def line(self) -> str:
        activity = self.activity() if self.status == "running" else ""
        resumed = f" ({self.skipped} resumed)" if self.skipped else ""
        tail = f"ETA {format_duration(self.eta)}" if self.status == "running" else self.status
        return (f"[{self.name}] {self.done + self.skipped}/{self.total} images{f' ({activity})' if activity else ''}"
                f"{resumed}  {self.rate:.2f} img/s  {tail}")


class GridProgress:
    """Thread-safe progress of every cell.

    ``echo`` receives each message and, unless ``live``, each cell's line as it changes (at most every
    ``min_interval_s`` per cell unless forced, and every ``heartbeat_s`` while unchanged). ``live``: a tqdm bar
    per cell on ``stream`` instead of the cell lines; messages print above the bars.
    """

    def __init__(self, echo: Callable[[str], None], min_interval_s: float = 2.0, *, heartbeat_s: float = 30.0,
                 live: bool = False, stream: TextIO | None = None):
        self._echo, self.min_interval_s, self.heartbeat_s = echo, min_interval_s, heartbeat_s
        self.live, self.stream = live, stream
        self.cells: dict[str, CellProgress] = {}
        self._bars: dict[str, tqdm] = {}
        self._lock = threading.RLock()
        self._last: dict[str, tuple[float, tuple[object, ...]]] = {}

    def echo(self, message: str) -> None:
        """A message for the console (above the live bars, when there are any)."""
        with self._lock:
            if self._bars:
                tqdm.write(message, file=self.stream or sys.stdout)
            else:
                self._echo(message)

    def cell(self, name: str, total: int, methods: int = 1) -> CellProgress:
        with self._lock:
            self.cells[name] = CellProgress(name, total, methods=methods)
            return self.cells[name]

    def update(self, cell: CellProgress, *, force: bool = False) -> None:
        now = time.perf_counter()
        with self._lock:
            if self.live:
                self._draw(cell)
                return
            last, shown = self._last.get(cell.name, (float("-inf"), None))
            changed = cell.state() != shown
            if force or (changed and now - last >= self.min_interval_s) or now - last >= self.heartbeat_s:
                self._last[cell.name] = (now, cell.state())
                self._echo(cell.line())

    def _draw(self, cell: CellProgress) -> None:
        bar = self._bars.get(cell.name)
        if bar is None:
            bar = self._bars[cell.name] = tqdm(total=cell.total, desc=cell.name, unit="img", position=len(self._bars),
                                               file=self.stream or sys.stdout, dynamic_ncols=True, leave=True)
        bar.n = cell.skipped + cell.images_done
        activity = cell.activity() if cell.status == "running" else ""
        tail = f"{cell.rate:.2f} img/s  ETA {format_duration(cell.eta)}" if cell.status == "running" else cell.status
        text = f"{activity}  {tail}" if activity else tail
        bar.bar_format = "{desc} {bar} {n:.1f}/{total} images  " + text.replace("{", "{{").replace("}", "}}")
        bar.refresh()

    def close(self) -> None:
        """End the live bars (the console is plain again)."""
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()

    def summary(self) -> str:
        lines = ["cell                                   images  resumed  seconds  img/s  status"]
        for cell in self.cells.values():
            lines.append(
                f"{cell.name:<38} {cell.total:>6}  {cell.skipped:>7}  {cell.elapsed:>7.1f}  "
                f"{cell.rate:>5.2f}  {cell.status}{' — ' + cell.error if cell.error else ''}"
            )
        return "\n".join(lines)
