"""`deepext doctor`: check every part the platform needs, as configured, and say how to fix what fails.

Each check returns a `CheckResult` (name, status, detail, fix); `run_checks` runs them in a fixed
order and never raises: a check that breaks unexpectedly is itself reported as failed. Statuses:

- `fail`: the platform cannot work as configured (the CLI exits 1);
- `warn`: it works with a limitation (no usable GPU, a provider answering 5xx);
- `skip`: the check does not apply (no `ray_address`, no providers, air-gapped mode);
- `ok`.

Doctor changes nothing it does not undo: it writes and deletes one probe object in the artifact
store and one probe file in the vector folder. It starts no Ray unless asked (`start_ray=True`), and
then in a child process that takes that Ray down when it ends. In air-gapped mode it calls no
external provider at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from deepext.config import Settings

Status = Literal["ok", "warn", "fail", "skip"]
RAY_PROBE_TIMEOUT_S = 60.0  # importing Ray and connecting (or starting one) in a child process
_PROBE_MARK = "DEEPEXT_RAY_PROBE "

# Run in a child process so a Ray that never answers (ray.init retries for minutes) can be killed, and
# a Ray started for the check goes down with the process.
_RAY_PROBE = f"""
import json, sys
import ray
address, num_cpus = sys.argv[1], sys.argv[2]
if address:
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
else:
    ray.init(num_cpus=int(num_cpus) if num_cpus else None, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
print({_PROBE_MARK!r} + json.dumps({{"nodes": nodes, "resources": ray.cluster_resources()}}), flush=True)
ray.shutdown()
"""


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def run_checks(settings: Settings, *, start_ray: bool = False, timeout_s: float = 5.0) -> list[CheckResult]:
    """Every check, in order: database, Ray, GPUs, artifact store, vector store, then one row per
    external provider. `timeout_s` bounds each network call (Ray has its own, longer bound)."""
    database = _guarded("database", lambda: check_database(settings, timeout_s=timeout_s))
    results = [
        database,
        _guarded("ray", lambda: check_ray(settings, start=start_ray)),
        _guarded("gpus", lambda: check_gpus(timeout_s=timeout_s)),
        _guarded("artifact store", lambda: check_artifact_store(settings)),
        _guarded("vector store", lambda: check_vector_store(settings, timeout_s=timeout_s)),
    ]
    try:
        results += check_providers(settings, database_ok=database.status == "ok", timeout_s=timeout_s)
    except Exception as exc:  # a broken check is a failed check, not a crashed doctor
        results.append(CheckResult("providers", "fail", f"the check itself failed: {_one_line(exc)}"))
    return results


def any_failed(results: list[CheckResult]) -> bool:
    return any(result.status == "fail" for result in results)


def _guarded(name: str, check: Callable[[], CheckResult]) -> CheckResult:
    try:
        return check()
    except Exception as exc:  # a broken check is a failed check, not a crashed doctor
        return CheckResult(name, "fail", f"the check itself failed: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


# ---- database
def check_database(settings: Settings, *, timeout_s: float = 5.0) -> CheckResult:
    """Reachable, and its schema at the newest migration. A missing SQLite file is reported, not made."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from deepext.db import Database
    from deepext.db.engine import alembic_config

    url = make_url(settings.resolved_database_url)
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not Path(url.database).is_file():
            return CheckResult(
                "database",
                "fail",
                f"no SQLite database at {url.database}",
                "`deepext db upgrade` or `deepext up` makes it",
            )
    elif "connect_timeout" not in url.query:
        url = url.update_query_dict({"connect_timeout": str(max(1, round(timeout_s)))})
    db = Database(url.render_as_string(hide_password=False))
    try:
        current = db.current_revision()
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        return CheckResult(
            "database",
            "fail",
            f"{shown} is not reachable: {_one_line(cause)}",
            "check DEEPEXT_DATABASE_URL, that the server runs, and that this user may connect",
        )
    finally:
        db.dispose()
    scripts = ScriptDirectory.from_config(alembic_config(settings.resolved_database_url))
    head = scripts.get_current_head()
    if current == head:
        return CheckResult("database", "ok", f"{shown}: schema at revision {current} (the newest)")
    if current is None:
        return CheckResult("database", "fail", f"{shown}: no schema (never migrated)", "deepext db upgrade")
    try:
        scripts.get_revision(current)
    except CommandError:
        return CheckResult(
            "database",
            "fail",
            f"{shown}: schema at revision {current}, which this deepext does not know (a newer deepext migrated it)",
            "run the deepext version that migrated it",
        )
    return CheckResult(
        "database", "fail", f"{shown}: schema at revision {current}, newest is {head}", "deepext db upgrade"
    )


# ---- Ray and GPUs
def check_ray(settings: Settings, *, start: bool = False, timeout_s: float = RAY_PROBE_TIMEOUT_S) -> CheckResult:
    """The cluster `ray_address` names, with its nodes, CPUs and GPUs. With no address, a local Ray is
    only described (`deepext up` starts it) unless `start` asks to try one now."""
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or ""
    cpus = settings.ray_num_cpus or os.cpu_count() or 1
    if not address and not start:
        return CheckResult(
            "ray",
            "skip",
            f"no ray_address: `deepext up` starts a local Ray with {cpus} CPUs (not started by doctor)",
            "set DEEPEXT_RAY_ADDRESS to use a cluster; `deepext doctor --start-ray` tries a local Ray now",
        )
    if address:
        refused = _tcp_refusal(address, timeout_s=min(timeout_s, 5.0))
        if refused:
            return CheckResult(
                "ray", "fail", f"{address}: {refused}", "start the cluster's head node, or fix DEEPEXT_RAY_ADDRESS"
            )
    found = _probe_ray(address, settings.ray_num_cpus, timeout_s)
    where = address or "a local Ray started for this check (and stopped)"
    if isinstance(found, str):
        fix = (
            "fix DEEPEXT_RAY_ADDRESS, or check the cluster's logs"
            if address
            else "start one by hand (`ray start --head`) to see why; logs: /tmp/ray/session_latest/logs"
        )
        return CheckResult("ray", "fail", f"{where}: {found}", fix)
    nodes, resources = found
    return CheckResult(
        "ray",
        "ok",
        f"{where}: {nodes} node(s), {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs",
    )


def _tcp_refusal(address: str, *, timeout_s: float) -> str | None:
    """Why nothing answers at a `host:port` or `ray://host:port` address; None when something does
    (or the address is not one to test, like `auto`). Ray itself would retry for minutes."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or not port:
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or type(exc).__name__})"


def _probe_ray(address: str, num_cpus: int | None, timeout_s: float) -> tuple[int, dict[str, float]] | str:
    """(alive nodes, cluster resources) from a child process, or why it could not tell."""
    process = subprocess.Popen(
        [sys.executable, "-c", _RAY_PROBE, address, str(num_cpus or "")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a local Ray it starts is killed with it
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return f"no answer within {timeout_s:g} s"
    for line in stdout.splitlines():
        if line.startswith(_PROBE_MARK):
            found = json.loads(line[len(_PROBE_MARK) :])
            return int(found["nodes"]), {k: float(v) for k, v in found["resources"].items()}
    errors = [line.strip() for line in stderr.splitlines() if line.strip()]
    return errors[-1][:400] if errors else f"the probe exited with code {process.returncode}"


def check_gpus(*, timeout_s: float = 5.0) -> CheckResult:
    """GPUs on this machine as torch sees them, cross-checked with nvidia-smi (a cluster's GPUs show
    in the Ray line)."""
    torch_gpus, torch_note = _torch_gpus()
    smi_gpus = _nvidia_smi_gpus(timeout_s)
    if torch_gpus:
        return CheckResult("gpus", "ok", f"torch ({torch_note}) uses {_summary(torch_gpus)}")
    if smi_gpus:
        return CheckResult(
            "gpus",
            "warn",
            f"nvidia-smi lists {_summary(smi_gpus)}, but torch cannot use them ({torch_note})",
            "install the CUDA build: DEEPEXT_EXTRAS=cuda scripts/setup.sh",
        )
    smi = "not installed" if smi_gpus is None else "lists none"
    return CheckResult(
        "gpus",
        "warn",
        f"no GPU on this machine (torch: {torch_note}; nvidia-smi: {smi}): training and serving run on the CPU",
        "fine for small models; on a GPU host install the NVIDIA driver and DEEPEXT_EXTRAS=cuda",
    )


def _torch_gpus() -> tuple[list[str], str]:
    try:
        import torch
    except ImportError:
        return [], "not installed"
    if not torch.cuda.is_available():
        build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no usable device"
        return [], f"{torch.__version__}, {build}"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return names, f"{torch.__version__}, CUDA {torch.version.cuda}"


def _nvidia_smi_gpus(timeout_s: float) -> list[str] | None:
    """GPU names nvidia-smi lists; None when there is no nvidia-smi, [] when it lists none or fails."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        done = subprocess.run(
            [binary, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi_names(done.stdout) if done.returncode == 0 else []


def parse_nvidia_smi_names(output: str) -> list[str]:
    """`nvidia-smi --query-gpu=name --format=csv,noheader` prints one GPU name a line."""
    return [line.strip() for line in output.splitlines() if line.strip()]


def _summary(names: list[str]) -> str:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{count} x {name}" for name, count in counts.items())


# ---- stores
def check_artifact_store(settings: Settings) -> CheckResult:
    """Write, read back and delete a probe object, by the same two steps a stored blob takes (a file
    in `tmp/`, moved into `blobs/`)."""
    from deepext.storage import ArtifactStore

    uri = settings.resolved_artifact_uri
    fix = f"make {uri} writable by this user (and by every Ray node), or point DEEPEXT_ARTIFACT_URI elsewhere"
    try:
        store = ArtifactStore(uri, cache_dir=settings.home / "cache")
    except Exception as exc:  # pyarrow and fsspec raise their own kinds for a store they cannot open
        return CheckResult("artifact store", "fail", f"{uri}: cannot open it: {_one_line(exc)}", fix)
    name = f"doctor-probe-{uuid.uuid4().hex}"
    staged, final = f"{store.root}/tmp/{name}", f"{store.root}/blobs/{name}"
    probe = f"deepext doctor {name}".encode()
    try:
        with store.fs.open_output_stream(staged) as out:
            out.write(probe)
        store.fs.move(staged, final)
        with store.fs.open_input_stream(final) as back:
            read = back.read()
        store.fs.delete_file(final)
    except Exception as exc:  # as above
        for path in (staged, final):
            with contextlib.suppress(Exception):  # nothing there to clean up
                store.fs.delete_file(path)
        return CheckResult("artifact store", "fail", f"{uri}: probe write/read/delete failed: {_one_line(exc)}", fix)
    if read != probe:
        return CheckResult("artifact store", "fail", f"{uri}: a probe object read back different bytes", fix)
    kind = "local folder" if store.is_local else "remote store"
    return CheckResult("artifact store", "ok", f"{uri} ({kind}): probe object written, read back and deleted")


def check_vector_store(settings: Settings, *, timeout_s: float = 5.0) -> CheckResult:
    """Weaviate: its readiness endpoint. LanceDB: a probe file in its folder (or, for an object-store
    URI, a listing of its tables)."""
    if settings.vector_store == "weaviate":
        return _check_weaviate(settings, timeout_s)
    uri = settings.resolved_vector_store_uri
    if "://" in uri:
        import lancedb

        tables = lancedb.connect(uri).list_tables().tables
        return CheckResult("vector store", "ok", f"LanceDB at {uri}: reachable, {len(tables)} collection(s) listed")
    folder = Path(uri).expanduser()
    probe = folder / f".doctor-probe-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)  # the store makes it on first use anyway
        probe.write_bytes(b"deepext doctor")
        probe.read_bytes()
        probe.unlink()
    except OSError as exc:
        return CheckResult(
            "vector store",
            "fail",
            f"LanceDB folder {folder} is not writable: {exc.strerror or exc}",
            f"make {folder} writable by this user, or point DEEPEXT_VECTOR_STORE_URI elsewhere",
        )
    collections = sum(1 for path in folder.glob("*.lance") if path.is_dir())
    return CheckResult("vector store", "ok", f"LanceDB folder {folder}: writable, {collections} collection(s)")


def _check_weaviate(settings: Settings, timeout_s: float) -> CheckResult:
    import httpx

    if not settings.weaviate_url:
        return CheckResult(
            "vector store", "fail", "vector_store = weaviate but weaviate_url is unset", "set DEEPEXT_WEAVIATE_URL"
        )
    url = f"{settings.weaviate_url.rstrip('/')}/v1/.well-known/ready"
    fix = "start Weaviate, or fix DEEPEXT_WEAVIATE_URL"
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return CheckResult("vector store", "fail", f"Weaviate at {url}: {_one_line(exc)}", fix)
    if response.status_code != 200:
        return CheckResult("vector store", "fail", f"Weaviate at {url}: not ready (HTTP {response.status_code})", fix)
    return CheckResult("vector store", "ok", f"Weaviate at {settings.weaviate_url}: ready")


# ---- external providers
def check_providers(settings: Settings, *, database_ok: bool, timeout_s: float = 5.0) -> list[CheckResult]:
    """One short GET `{base_url}/models` per registered provider (no API key is sent: this tells
    reachability, not whether the key works). Air-gapped: no call at all."""
    if not database_ok:
        return [CheckResult("providers", "skip", "not checked: the database check failed")]
    from sqlalchemy import select

    from deepext.db import Database
    from deepext.db.models import Project, Provider

    db = Database(settings.resolved_database_url)
    try:
        with db.session() as session:
            query = (
                select(Project.name, Provider.name, Provider.base_url)
                .join(Project, Project.id == Provider.project_id)
                .order_by(Project.name, Provider.name)
            )
            rows = [tuple(row) for row in session.execute(query)]
    finally:
        db.dispose()
    if not rows:
        return [CheckResult("providers", "skip", "no external providers registered")]
    if settings.air_gapped:
        return [CheckResult("providers", "skip", f"skipped: air-gapped ({len(rows)} registered, none called)")]
    return [
        _check_provider(settings, f"provider {project}/{name}", base_url, timeout_s) for project, name, base_url in rows
    ]


def _check_provider(settings: Settings, name: str, base_url: str, timeout_s: float) -> CheckResult:
    """The provider's test connection (`deepext/serve/providers/probe.py`) without its key."""
    from deepext.serve.providers.probe import probe_provider

    probe = probe_provider(settings, kind="openai", base_url=base_url, api_key=None, timeout_s=timeout_s)
    if not probe.reachable:
        return CheckResult(
            name,
            "fail",
            probe.detail,
            "check the base URL and this host's outbound network "
            "(DEEPEXT_AIR_GAPPED=1 if it must make no outside calls)",
        )
    if (probe.status_code or 0) >= 500:
        return CheckResult(name, "warn", probe.detail, "the provider reports an error of its own; try later")
    return CheckResult(name, "ok", f"{probe.detail} (reachable; no API key sent)")
