"""Progress of a running grid: a line per cell (images done / total, images/s, ETA) and a final summary."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["CellProgress", "GridProgress", "format_duration"]


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


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
    maps_done: int = 0  # (image, method) maps finished in this run, of images not yet all done too

    @property
    def elapsed(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def rate(self) -> float:
        """Images per second, counting an image's maps as they come (a method's share of an image)."""
        done = max(self.done, self.maps_done / self.methods)
        return done / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        done = max(self.done, self.maps_done / self.methods)
        left = self.total - done - self.skipped
        eta = left / self.rate if self.rate > 0 else float("inf")
        resumed = f" ({self.skipped} resumed)" if self.skipped else ""
        maps = (f" ({self.maps_done}/{(self.total - self.skipped) * self.methods} maps)"
                if self.status == "running" and self.methods > 1 and self.maps_done > self.done * self.methods else "")
        tail = f"ETA {format_duration(eta)}" if self.status == "running" else self.status
        return (f"[{self.name}] {self.done + self.skipped}/{self.total} images{maps}{resumed}  {self.rate:.2f} img/s  "
                f"{tail}")


class GridProgress:
    """Thread-safe progress of every cell; ``echo`` receives each line as it changes."""

    def __init__(self, echo: Callable[[str], None], min_interval_s: float = 2.0):
        self.echo, self.min_interval_s = echo, min_interval_s
        self.cells: dict[str, CellProgress] = {}
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def cell(self, name: str, total: int, methods: int = 1) -> CellProgress:
        with self._lock:
            self.cells[name] = CellProgress(name, total, methods=methods)
            return self.cells[name]

    def update(self, cell: CellProgress, *, force: bool = False) -> None:
        now = time.perf_counter()
        with self._lock:
            if force or now - self._last.get(cell.name, 0.0) >= self.min_interval_s:
                self._last[cell.name] = now
                self.echo(cell.line())

    def summary(self) -> str:
        lines = ["cell                                   images  resumed  seconds  img/s  status"]
        for cell in self.cells.values():
            lines.append(
                f"{cell.name:<38} {cell.total:>6}  {cell.skipped:>7}  {cell.elapsed:>7.1f}  "
                f"{cell.rate:>5.2f}  {cell.status}{' — ' + cell.error if cell.error else ''}"
            )
        return "\n".join(lines)
