"""The run's log file takes Ray's records and camgrid's tracebacks; the console keeps camgrid's own lines."""

from __future__ import annotations

import logging

import pytest

from jobs.run_log import log_path, run_log


@pytest.fixture
def ray_console():
    """Ray's loggers with a console handler of their own, at WARNING (whatever earlier tests left them at)."""
    import io

    import ray  # noqa: F401 - installs Ray's handlers first, as in a run

    stream = io.StringIO()
    console = logging.StreamHandler(stream)
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(console)
        logger.setLevel(logging.WARNING)
    yield stream
    for logger, level in zip(loggers, levels):
        logger.removeHandler(console)
        logger.setLevel(level)


def test_rays_records_go_to_the_file_and_leave_the_console(tmp_path, ray_console):
    path = tmp_path / "run" / "camgrid.log"  # the folder does not exist yet
    with run_log(path) as handler:
        logging.getLogger("ray").warning("a memory monitor notice")
        logging.getLogger("ray.data").warning("an operator hint")
        try:
            raise ValueError("a cell failed")
        except ValueError as err:
            logging.getLogger("camgrid.job").error("cell d/a, attempt 1 of 1 failed", exc_info=err)
    assert "notice" not in ray_console.getvalue() and "hint" not in ray_console.getvalue()
    text = path.read_text()
    assert handler.baseFilename == str(path)
    assert "WARNING ray: a memory monitor notice" in text and "an operator hint" in text
    assert "ERROR camgrid.job: cell d/a, attempt 1 of 1 failed" in text and "ValueError: a cell failed" in text
    logging.getLogger("ray").warning("after the run")  # the console handlers are back, the file is closed
    assert "after the run" in ray_console.getvalue() and "after the run" not in path.read_text()


def test_verbose_keeps_rays_records_on_the_console_too(tmp_path, ray_console):
    with run_log(tmp_path / "camgrid.log", verbose=True):
        logging.getLogger("ray").warning("shown")
    assert "shown" in ray_console.getvalue() and "shown" in (tmp_path / "camgrid.log").read_text()


@pytest.mark.parametrize("location, expected", [("runs/demo", "runs/demo/camgrid.log"),
                                                ("s3://bucket/runs/demo", "camgrid-demo.log")])
def test_the_log_is_in_a_local_run_directory_else_in_the_temporary_folder(location, expected):
    assert str(log_path(location, "demo")).endswith(expected)
