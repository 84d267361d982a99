"""A GRPO run across two Ray nodes on one machine, and what happens when a node dies mid-run.

The test starts a Ray head and a second Ray node as separate `ray start --block` processes, each
with its own temp dir, ports and a custom resource that marks it: `deepext_learner` on the head,
`deepext_rollout` on the other node. The run's `resources.learner_resources` and
`resources.rollout_resources` ask for those, so Ray places the learner (a Ray Train worker) on the
head and the rollout worker (the vLLM engine) on the second node. The weights then really cross
nodes: the rollout worker reads them from Ray's object store, not from the learner's folder.

The driver of each run is this module as a script (`python -m tests.ops.test_multi_node ...`),
connected to the head like any `ray job` driver; after the run it asks Ray's state API on which
node each actor ran.

One run of 4 steps on the two nodes, beside the same run of 2 steps on one node (the test
session's own Ray):
1. Up to step 2 (its first checkpoint) it has the same per-step rewards and the same weights as
   the one-node run.
2. Then it loses the rollout node (SIGKILL to every process of that node), and a replacement node
   with the same resource joins, as an autoscaler would bring one. A reward holds step 3's scoring
   until the node is gone, so the loss lands mid-run however slowly the test process gets to notice
   the checkpoint. Ray restarts the rollout worker there, Ray Train restarts the learner from the
   checkpoint, the learner brings the new engine to that policy, and the run finishes.

Run: .venv/bin/python -m pytest tests/ops/test_multi_node.py (about two minutes on 2 cores).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.grpo.test_learners import run_config
from tests.helpers import free_port, registered_checkpoints, wait_until, wait_until_held

LEARNER_MARK = "deepext_learner"
ROLLOUT_MARK = "deepext_rollout"
ROOT = Path(__file__).resolve().parents[2]
CLUSTER_TOKEN = secrets.token_hex(32)  # Ray's token auth, as a real cluster runs it


@dataclass
class TwoNodes:
    """A head and worker nodes, each a `ray start --block` process group of its own."""

    root: Path
    address: str = ""
    dashboard: str = ""
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_ports: int = 21000

    def start_head(self, wait: bool = True) -> None:
        port, dashboard = free_port(), free_port()
        self.address, self.dashboard = f"127.0.0.1:{port}", f"127.0.0.1:{dashboard}"
        self._start(
            "head",
            [
                "--head",
                f"--port={port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={free_port()}",
            ],
            LEARNER_MARK,
            wait,
        )

    def start_worker(self, name: str, wait: bool = True) -> None:
        self._start(name, [f"--address={self.address}"], ROLLOUT_MARK, wait)

    def _start(self, name: str, role: list[str], mark: str, wait: bool = True) -> None:
        low = self.worker_ports
        self.worker_ports += 200  # each node its own worker ports, away from the session Ray's 10002-19999
        command = [
            str(Path(sys.executable).parent / "ray"), "start", "--block", *role,
            "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
            f"--resources={json.dumps({mark: 1})}",
            f"--temp-dir={self.root / name}", "--disable-usage-stats",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--min-worker-port={low}", f"--max-worker-port={low + 199}",
            "--object-store-memory=200000000",
        ]  # fmt: skip
        log = (self.root / f"{name}.log").open("wb")
        self.nodes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=node_env()
        )
        if wait:
            self.wait_for_nodes(sum(process.poll() is None for process in self.nodes.values()))

    def wait_for_nodes(self, count: int, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self.nodes.items():
                if process.poll() not in (None, -signal.SIGKILL):
                    raise AssertionError(f"ray node {name} exited: {(self.root / f'{name}.log').read_text()[-3000:]}")
            if self.dashboard and len(alive_nodes(self.dashboard)) == count:
                return
            time.sleep(0.5)
        raise AssertionError(f"{count} ray nodes did not come up within {timeout_s} s")

    def kill(self, name: str) -> None:
        """The node dies at once: SIGKILL to its raylet, object store and workers."""
        os.killpg(self.nodes[name].pid, signal.SIGKILL)
        self.nodes[name].wait()
        for pid in node_worker_pids(self.root / name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        for name in reversed(list(self.nodes)):
            if self.nodes[name].poll() is None:
                self.kill(name)


def node_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["PYTHONPATH"] = str(ROOT)
    env["RAY_TRAIN_V2_ENABLED"] = "1"
    env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"] = "token", CLUSTER_TOKEN
    # A dead node is noticed within a few seconds, not the default ~30.
    env["RAY_health_check_period_ms"] = "1000"
    env["RAY_health_check_failure_threshold"] = "3"
    return env


def alive_nodes(dashboard: str) -> list[dict[str, Any]]:
    """Alive nodes as Ray's state API on the head's dashboard lists them (none while it is not up)."""
    request = urllib.request.Request(
        f"http://{dashboard}/api/v0/nodes?limit=100", headers={"Authorization": f"Bearer {CLUSTER_TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            nodes = json.load(response)["data"]["result"]["result"]
    except (OSError, ValueError, KeyError):
        return []
    return [node for node in nodes if node.get("state") == "ALIVE"]


def node_worker_pids(temp_dir: Path) -> list[int]:
    """Processes that still run from this node's temp dir (Ray workers outlive a killed raylet briefly)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                environ = (proc / "environ").read_bytes()
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(temp_dir).encode() in cmdline or str(temp_dir).encode() in environ:
                pids.append(int(proc.name))
    return [pid for pid in pids if pid != os.getpid()]


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[TwoNodes]:
    """One cluster for the module; the node-loss test, last, leaves it changed."""
    # A short root: Ray's unix sockets live under it, and their paths may not exceed 107 bytes.
    cluster = TwoNodes(Path(tempfile.mkdtemp(prefix="deepext-nodes-", dir="/tmp")))
    try:
        cluster.start_head(wait=False)
        cluster.start_worker("worker")  # it waits for the head's GCS, then both count
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def placed_config(config: dict[str, Any]) -> dict[str, Any]:
    resources = {**config["resources"], "learner_resources": {LEARNER_MARK: 1}, "rollout_resources": {ROLLOUT_MARK: 1}}
    return {**config, "resources": resources}


def drive(address: str, config: dict[str, Any], out: Path) -> subprocess.Popen[bytes]:
    """Start this module as a driver of `config` on the cluster at `address`; it writes `out`."""
    config_file = out.with_suffix(".config.json")
    config_file.write_text(json.dumps(config))
    log = out.with_suffix(".log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ops.test_multi_node", address, str(config_file), str(out)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=node_env(),
    )  # fmt: skip


def finished(process: subprocess.Popen[bytes], out: Path, timeout_s: float = 400) -> dict[str, Any]:
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    log = out.with_suffix(".log").read_text(errors="replace")
    assert process.returncode == 0 and out.exists(), f"driver failed:\n{log[-6000:]}"
    return dict(json.loads(out.read_text()))


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def rewards_by_step(metrics: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(m["step"], m["reward_mean"]) for m in metrics if "reward_mean" in m]


def base_config(tiny_model: Path, tmp_path: Path, name: str, **schedule: Any) -> dict[str, Any]:
    config = run_config(
        tiny_model,
        tmp_path,
        schedule={"steps": 2, "checkpoint_every": 2, **schedule},
        resources={"learner_cpus": 1, "rollout_cpus": 1, "threads_per_worker": 1, "max_model_len": 128},
    )
    return {**config, "output_dir": str(tmp_path / name)}


@pytest.mark.slow
def test_a_two_node_run_matches_one_node_and_recovers_from_losing_its_rollout_node(
    ray_session: str, two_nodes: TwoNodes, tiny_model: Path, tmp_path: Path
) -> None:
    from deepext.grpo.loop import train
    from deepext.grpo.metrics import read_metrics

    gate = tmp_path / "gate"
    gate.mkdir()
    config = placed_config(base_config(tiny_model, tmp_path, "two-nodes", steps=4))
    config["rewards"].append({"name": "tests.helpers:held_on_call", "params": {"gate": str(gate)}})
    config["resources"]["sync_timeout_s"] = 180
    out = tmp_path / "two-nodes.json"
    driver = drive(two_nodes.address, config, out)
    output = Path(config["output_dir"])
    try:
        single = train(base_config(tiny_model, tmp_path, "one-node"), run_id="same")  # meanwhile, on one node
        # held in step 3's scoring: steps 1-2 and their checkpoint are done
        assert wait_until_held(gate, lambda: driver.poll() is None), out.with_suffix(".log").read_text()[-4000:]
        wait_until(lambda: registered_checkpoints(output) == 1, 60, "Ray Train to register step 2's checkpoint")
        killed_at, before = time.monotonic(), read_metrics(output)
        [checkpoint] = output.glob("ray/*/checkpoint_*/policy")  # step 2's, the only one so far
        nodes = alive_nodes(two_nodes.dashboard)
        [rollout_node] = [node["node_id"] for node in nodes if ROLLOUT_MARK in node["resources_total"]]
        two_nodes.kill("worker")
        two_nodes.start_worker("replacement")  # waits until Ray counts two nodes again
    finally:
        (gate / "released").touch()
    report = finished(driver, out)

    # Up to the loss: the same run as on one node, step by step and weight by weight
    assert rewards_by_step(before) == rewards_by_step(single.metrics)
    one, two = weights(single.model_dir), weights(checkpoint)
    assert one.keys() == two.keys()
    worst = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    assert worst <= 1e-6, f"step-2 weights differ by up to {worst}"
    start = weights(tiny_model)
    assert any(not torch.equal(start[k], two[k]) for k in start if k in two)  # it did train

    # After it: resumed once from the step-2 checkpoint, and ran to the end
    seen = max(step for step, _ in rewards_by_step(before))
    resumed = [m["event/resumed_from_step"] for m in report["metrics"] if "event/resumed_from_step" in m]
    print(f"\nrollout node killed after step {seen}; resumed from step {resumed}; "
          f"finished {time.monotonic() - killed_at:.1f} s later")  # fmt: skip
    assert seen == 2 and resumed == [2]
    assert max(step for step, _ in rewards_by_step(report["metrics"])) == 4
    assert (output / "final" / "model" / "config.json").exists()

    # Ray's own account of where the actors ran: the learner on the head throughout; the rollout
    # worker on the killed node, then restarted (the same actor) on the replacement
    [learner_node], [replacement] = report["nodes_with"][LEARNER_MARK], report["nodes_with"][ROLLOUT_MARK]
    assert report["dead_nodes"] == [rollout_node] and len({learner_node, rollout_node, replacement}) == 3
    assert {a["node_id"] for a in report["actors"]["RayTrainWorker"]} == {learner_node}
    assert [a["node_id"] for a in report["actors"]["RolloutWorker"]] == [replacement]
    print(f"placement: learner on {learner_node[:12]} (head), rollout worker on {rollout_node[:12]}, "
          f"then on {replacement[:12]}")  # fmt: skip


# ---------------------------------------------------------------- the driver (run as a script)
def main(address: str, config_file: str, out: str) -> None:
    import ray
    from ray.util.state import list_actors

    from deepext.grpo.loop import train

    ray.init(address=address, logging_level="ERROR")
    result = train(json.loads(Path(config_file).read_text()), run_id="multi-node")
    actors: dict[str, list[dict[str, Any]]] = {"RayTrainWorker": [], "RolloutWorker": []}
    job = ray.get_runtime_context().get_job_id()
    for actor in list_actors(address=address, limit=10_000, raise_on_missing_output=False, detail=True):
        if actor.class_name in actors and actor.job_id == job:
            actors[actor.class_name].append({"node_id": actor.node_id, "state": actor.state, "pid": actor.pid})
    nodes = ray.nodes()
    report = {
        "metrics": result.metrics,
        "actors": actors,
        "nodes_with": {
            mark: [n["NodeID"] for n in nodes if n["Alive"] and mark in n.get("Resources", {})]
            for mark in (LEARNER_MARK, ROLLOUT_MARK)
        },
        "dead_nodes": [n["NodeID"] for n in nodes if not n["Alive"]],
    }
    Path(out).write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:4])
