"""Ctrl-C stops a run within seconds, keeps what was written and lets go of the run directory.

The run is a child process with its own embedded Ray (a signal to it is what a terminal's Ctrl-C
sends); this module runs while no other test holds a Ray instance.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_job_ray import grid_spec

from storage.builders import build
from storage.results import RunStore

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent


@pytest.fixture
def manifest(tmp_path):
    build("demo", None, tmp_path / "demo", shard_size=2)
    return str(tmp_path / "demo")


INTERRUPTED_RUN = """
import json, os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background child may ignore it)
from job_faults import HangingEvaluator
from jobs.pipeline import GridInterruptedError, run_grid
from jobs.spec import parse_spec

try:
    run_grid(parse_spec(json.loads(sys.argv[1]), "interrupt.yaml"), sys.argv[2], evaluator=HangingEvaluator,
             echo=lambda line: print(line, flush=True))
except GridInterruptedError as err:
    print(f"raised: {err}", flush=True)
    os._exit(3)  # as the CLI exits: without joining a thread still inside Ray
"""


def test_ctrl_c_stops_the_run_at_once_and_a_rerun_can_take_the_directory(manifest, tmp_path):
    import ray

    ray.shutdown()
    spec = grid_spec(manifest, methods={"gradcam": {}}, metrics={"sparseness": {}})
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own Ray, not a running one
    env.update(PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent)]), CAMGRID_TEST_STATE=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", INTERRUPTED_RUN, json.dumps(spec), str(tmp_path / "run")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in process.stdout:  # wait until the cell is running
        lines.append(line)
        if line.startswith("[demo/lite0]"):
            break
    for _ in range(600):  # and an actor is inside a batch that would take an hour
        if (tmp_path / "hanging").exists():
            break
        time.sleep(0.2)
    time.sleep(1)
    interrupted = time.perf_counter()
    process.send_signal(signal.SIGINT)
    try:
        rest, _ = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        process.kill()
        rest, _ = process.communicate()
        pytest.fail("the interrupted run did not stop:\n" + "".join(lines) + rest)
    output = "".join(lines) + rest
    assert process.returncode == 3, output
    assert time.perf_counter() - interrupted < 90, output  # a hanging batch would hold it for an hour
    assert "interrupted: stopping the cells" in output and "rerun the same command to resume" in output
    with RunStore(str(tmp_path / "run")).lock():  # the interrupted run let go of its directory
        pass


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_a_run_prints_camgrids_lines_and_none_of_rays(manifest, tmp_path, executor):
    import ray

    ray.shutdown()
    spec = grid_spec(manifest, samples=2, methods={"gradcam": {}}, metrics={"sparseness": {}})
    (tmp_path / "quiet.yaml").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(PYTHONPATH=str(TESTS.parent))
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "run", str(tmp_path / "quiet.yaml"), "--out",
                           str(tmp_path / "run"), "--no-report", "--executor", executor], capture_output=True,
                          text=True, env=env,
                          timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "finished in" in output
    for noise in ("WARNING", "Warning", "core_worker", "Progress bars", "Token authentication", "Traceback"):
        assert noise not in output, (noise, output)
