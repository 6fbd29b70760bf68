"""The run's log file: what the console leaves out — Ray's own warnings, each failed attempt's traceback.

The console shows camgrid's lines (progress, diagnostics, one-line errors); :func:`run_log` sends the
``ray`` and ``camgrid`` loggers to a file as well and, unless ``verbose``, takes Ray's console handlers
off the console while it is open. A one-line error can then say where its traceback is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOG_NAME", "LOGGERS", "log_path", "run_log"]

LOG_NAME = "camgrid.log"
LOGGERS = ("ray", "ray.data", "camgrid")  # Ray's loggers do not propagate: each gets the file


def log_path(location: str, name: str) -> Path:
    """Where the log of a run into ``location`` goes: inside it when it is local, else in the temporary folder."""
    if "://" in location:
        import tempfile

        return Path(tempfile.gettempdir()) / f"camgrid-{name}.log"
    return Path(location) / LOG_NAME


class _FileHandler(logging.FileHandler):
    """A file handler that creates its folder when it first writes (the run directory may not exist yet), and
    writes into the temporary folder where that folder cannot be written (the error then says why)."""

    def _open(self):  # noqa: ANN202 - logging.FileHandler's own hook
        try:
            Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            return super()._open()
        except OSError:
            import tempfile

            self.baseFilename = os.path.join(tempfile.gettempdir(), f"camgrid-{os.getpid()}.log")
            return super()._open()


def _console_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextmanager
def run_log(path: str | os.PathLike, verbose: bool = False) -> Iterator[logging.FileHandler]:
    """Log Ray's and camgrid's records at INFO and above into ``path`` (appended, created on the first record) while
    the block runs; Ray's console handlers are silenced unless ``verbose``. Yields the file's handler: its
    ``baseFilename`` is where the records went."""
    import ray  # noqa: F401 - Ray installs its handlers on import: they must exist to be silenced

    handler = _FileHandler(os.fspath(path), encoding="utf-8", delay=True)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = {logger.name: logger.level for logger in loggers}
    silenced = {h: h.level for logger in loggers for h in _console_handlers(logger)} if not verbose else {}
    for logger in loggers:
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO or logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    for console in silenced:
        console.setLevel(logging.CRITICAL + 1)
    try:
        yield handler
    finally:
        for console, level in silenced.items():
            console.setLevel(level)
        for logger in loggers:
            logger.removeHandler(handler)
            logger.setLevel(levels[logger.name])
        handler.close()
