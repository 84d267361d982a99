"""cluster.yaml, the Ray cluster launcher's config: valid by Ray's own schema and checks, and consistent
with what deepext needs on the nodes - deepext installed by scripts/setup.sh with the CUDA extra at the
images' path, the settings file mounted, named and documented, and Ray listening where the platform
(the compose profile `cluster`) connects."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml

from deepext.config import Settings
from tests.deploy import (
    CLUSTER_FILE,
    DOCKERFILES,
    DOCKERIGNORE,
    ROOT,
    dockerfile_instructions,
    flag_values,
    load_compose,
    service_env,
    unknown_ray_start_flags,
)

REMOTE_SOURCES = "~/deepext"  # where the file mounts put the sources setup.sh installs from
INSTALL_PATH = "/opt/deepext"  # the images' path, linked to REMOTE_SOURCES on the nodes
SHARED_MOUNT = "/srv/deepext"  # the shared file system every node mounts


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose_api() -> dict[str, str]:
    """The compose `api` service's environment with its defaults: the platform that uses the cluster."""
    return service_env(load_compose({"POSTGRES_PASSWORD": "Test1234"})["services"]["api"])


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_validates_against_the_schema_ray_ships(cluster: dict[str, Any]) -> None:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(cluster, schema)


def test_rays_own_config_checks_accept_it(cluster: dict[str, Any]) -> None:
    """What `ray up` runs before it contacts the cloud: defaults filled in, node types and limits checked."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_a_coordinating_head_and_gpu_workers_the_scheduler_can_plan_on(cluster: dict[str, Any]) -> None:
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # training and rollouts go to the workers
    gpu_workers = [t for name, t in types.items() if name != cluster["head_node_type"] and t["resources"].get("GPU")]
    assert gpu_workers
    for worker in gpu_workers:
        # deepext's scheduler admits a job only on capacity the cluster already has: at least one GPU node.
        assert 1 <= worker["min_workers"] <= worker["max_workers"] <= cluster["max_workers"]
    # One machine image everywhere: the same Python on every node, which Ray Client and Ray itself need.
    assert len({t["node_config"]["ImageId"] for t in types.values()}) == 1


def test_setup_installs_deepext_with_the_cuda_extra_from_the_mounted_sources(cluster: dict[str, Any]) -> None:
    commands = cluster["setup_commands"]
    installs = [command for command in commands if "scripts/setup.sh" in command]
    assert len(installs) == 1
    assert re.fullmatch(rf"DEEPEXT_EXTRAS=\S*\bcuda\b\S* {INSTALL_PATH}/scripts/setup.sh", installs[0])
    link = f"sudo ln -sfn {REMOTE_SOURCES} {INSTALL_PATH}"
    assert commands.index(link) < commands.index(installs[0])
    # Everything setup.sh installs from (pyproject.toml and what it names) travels, and nothing else of
    # the checkout: a mounted .venv would be hashed and copied on every `ray up`.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    needed = {"pyproject.toml", project["project"]["readme"], "scripts", *packages}
    sources = {
        remote.removeprefix(f"{REMOTE_SOURCES}/"): local
        for remote, local in cluster["file_mounts"].items()
        if remote.startswith(f"{REMOTE_SOURCES}/")
    }
    assert set(sources) == needed
    for name, local in sources.items():
        assert local == f"./{name}" and (ROOT / name).exists(), name


def test_nodes_start_jobs_with_the_python_the_images_have(cluster: dict[str, Any]) -> None:
    """Ray Jobs runs a deepext job's entry point with the `sys.executable` of the platform that submitted
    it: /opt/deepext/.venv/bin/python in the images, so the same on every node."""
    for path in DOCKERFILES.values():
        assert ("WORKDIR", INSTALL_PATH) in dockerfile_instructions(path)
    setup = " ".join(cluster["setup_commands"])
    assert f"export PATH={INSTALL_PATH}/.venv/bin:$PATH" in setup  # `ray start` and jobs find deepext
    assert cluster["head_setup_commands"] == [f"{INSTALL_PATH}/.venv/bin/python -m pip install -q 'boto3>=1.34'"]


def test_the_settings_file_is_mounted_named_and_documented(
    cluster: dict[str, Any], compose_api: dict[str, str]
) -> None:
    mounts = cluster["file_mounts"].items()
    ((remote, local),) = [
        (r, loc) for r, loc in mounts if r.endswith(".toml") and not r.startswith(f"{REMOTE_SOURCES}/")
    ]
    setup = " ".join(cluster["setup_commands"])
    assert f"DEEPEXT_CONFIG={remote.replace('~', '$HOME', 1)}" in setup
    assert any(f"mountpoint -q {SHARED_MOUNT}" in command for command in cluster["setup_commands"])
    # The file holds the database password: it stays out of the images.
    assert Path(local).name in DOCKERIGNORE.read_text(encoding="utf-8").split()
    doc = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    fence = rf"^( *)```toml\n\1# {re.escape(Path(local).name)}\n(.*?)^\1```"
    block = re.search(fence, doc, re.DOTALL | re.MULTILINE)
    assert block is not None, f"docs/deployment.md shows no {Path(local).name}"
    settings = Settings(**tomllib.loads(textwrap.dedent(block.group(2))))  # unknown keys, wrong values refused
    assert settings.ray_address == "auto"
    # The platform forwards its home and artifact store to every job: the nodes must have the same ones.
    assert str(settings.home) == compose_api["DEEPEXT_HOME"]
    assert settings.resolved_artifact_uri == compose_api["DEEPEXT_ARTIFACT_URI"]
    assert str(settings.home).startswith(f"{SHARED_MOUNT}/")
    assert settings.resolved_artifact_uri.startswith(f"{SHARED_MOUNT}/")


def test_ray_listens_where_the_platform_connects_and_only_privately(
    cluster: dict[str, Any], compose_api: dict[str, str]
) -> None:
    head = " ".join(cluster["head_start_ray_commands"])
    gcs_port = flag_values(head, "--port")
    assert flag_values(head, "--ray-client-server-port") == [str(port_of(compose_api["DEEPEXT_RAY_ADDRESS"]))]
    assert flag_values(head, "--dashboard-port") == [str(port_of(compose_api["DEEPEXT_RAY_JOBS_URL"]))]
    assert flag_values(head, "--dashboard-host") == ["0.0.0.0"]
    assert flag_values(head, "--autoscaling-config") == ["~/ray_bootstrap_config.yaml"]
    worker = " ".join(cluster["worker_start_ray_commands"])
    assert flag_values(worker, "--address") == [f"$RAY_HEAD_IP:{gcs_port[0]}"]
    assert unknown_ray_start_flags(f"{head}; {worker}") == []
    rules = cluster["provider"]["security_group"]["IpPermissions"]
    opened = {rule["FromPort"] for rule in rules}
    assert opened == {
        port_of(compose_api["DEEPEXT_RAY_ADDRESS"]),
        port_of(compose_api["DEEPEXT_RAY_JOBS_URL"]),
        int(compose_api["DEEPEXT_API_PORT"]),
    }
    for rule in rules:
        assert rule["FromPort"] == rule["ToPort"]
        assert all(ipaddress.ip_network(r["CidrIp"]).is_private for r in rule["IpRanges"]), rule
