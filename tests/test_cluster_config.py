"""``cluster.yaml`` is a valid Ray cluster launcher config with the shape the job relies on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema(config):
    """What ``ray up`` does first: fill the provider's defaults, then check the schema."""
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["max_workers"] = "many"
    with pytest.raises(Exception, match="'many' is not of type 'integer'"):
        validate_config(prepare_config(broken))


def test_head_has_no_gpu_and_workers_autoscale(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert any("--num-gpus=0" in command for command in config["head_start_ray_commands"])
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["min_workers"] < t["max_workers"] for t in workers)
    assert any(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers)  # GPU instances


def test_nodes_install_this_package_at_the_pinned_ray(config):
    pyproject = (ROOT / "pyproject.toml").read_text()
    pinned = re.search(r'"ray\[[^\]]*\]==([\d.]+)"', pyproject).group(1)
    commands = " ".join(config["setup_commands"])
    assert f"==={pinned}" not in commands and f"=={pinned}" in commands
    assert "/home/ubuntu/camgrid" in config["file_mounts"] and "pip install -q -e /home/ubuntu/camgrid" in commands
    import ray

    assert ray.__version__ == pinned  # the client submits to a cluster of the same Ray


def test_every_node_runs_ray_with_token_auth_and_a_loopback_job_server(config):
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    starts = [c for c in commands if "ray start" in c]
    assert starts and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts)
    head = next(c for c in config["head_start_ray_commands"] if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    readme = (ROOT / "README.md").read_text()
    assert "ray get-auth-token --generate" in readme and 'ray exec cluster.yaml "ray get-auth-token"' not in readme
