"""farm on a Ray cluster of two nodes on this machine, started as a user starts one: a head
(`ray start --head`: token authentication is on because this user keeps a token in
~/.ray/auth_token) and a second node (`RAY_AUTH_MODE=token ray start --address ...`, as Ray asks
of a node that joins), each with its own name, a device pinned to each with `node:`. farm joins
with `--ray-address` and no RAY_AUTH_* variable. The last test kills the second node's raylet
mid-job. Both nodes are stopped by the pids of their `ray start --block` (never `ray stop`,
which would stop every cluster of this machine).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import FARM, QUICK, children, descendants, farm_cli

RAY = str(Path(sys.executable).parent / "ray")
STARTED_S = 90  # a node's start on a loaded machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    name: str
    process: subprocess.Popen  # its `ray start --block`, which stops what it started
    log: Path
    raylet: int = 0  # pid
    node_id: str = ""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _raylet_of(parent: int) -> tuple[int, str]:
    """The raylet `ray start` started (its child), and the node id on its command line."""
    for pid, argv in children(parent).items():
        if argv[0].endswith(b"raylet/raylet"):
            node_id = next(a for a in argv if a.startswith(b"--node_id=")).split(b"=", 1)[1]
            return pid, node_id.decode()
    raise AssertionError(f"no raylet started by pid {parent}")


def _start_node(name: str, args: list[str], env: dict, folder: Path) -> Node:
    log = folder / f"{name}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [RAY, "start", "--block", f"--node-name={name}", "--num-cpus=1",
             "--disable-usage-stats", f"--object-store-memory={128 * 2**20}",
             f"--dashboard-agent-listen-port={_free_port()}", *args],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    node = Node(name, process, log)
    try:
        deadline = time.monotonic() + STARTED_S
        while "Ray runtime started" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, \
                log.read_text()[-3000:]
            time.sleep(0.3)
        node.raylet, node.node_id = _raylet_of(process.pid)
    except BaseException:
        _stop_node(node)
        raise
    return node


def _stop_node(node: Node) -> None:
    if node.process.poll() is None:
        node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:  # whatever it left in the session it ran in
        os.killpg(node.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    node.process.wait()


@dataclass
class Cluster:
    address: str
    head: Node
    second: Node
    home: Path  # a user's home with Ray's token in .ray/auth_token
    token: str
    devices: tuple[str, str]  # one pinned to the head, one to the second node

    def env(self, **extra) -> dict:
        """A farm user's environment: no RAY_AUTH_* variable, unless given."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
        return {**env, "HOME": str(self.home), **extra}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    folder = tmp_path_factory.mktemp("nodes")
    temp_dir = tempfile.mkdtemp(prefix="farm-ray-", dir="/tmp")  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(home)
    made = subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    tag = uuid.uuid4().hex[:6]
    devices = (f"rc{tag}-h", f"rc{tag}-s")
    port, nodes = _free_port(), []
    try:
        nodes.append(_start_node("head", [
            "--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false",
            f"--dashboard-port={_free_port()}",
            f"--resources={json.dumps({f'farm_device:{devices[0]}': 1})}"], env, folder))
        assert "Token authentication is enabled" in nodes[0].log.read_text()
        nodes.append(_start_node("second", [
            f"--address=127.0.0.1:{port}",
            f"--resources={json.dumps({f'farm_device:{devices[1]}': 1})}"],
            dict(env, RAY_AUTH_MODE="token"), folder))
        yield Cluster(f"127.0.0.1:{port}", *nodes, home,
                      (home / ".ray" / "auth_token").read_text().strip(), devices)
    finally:
        for node in reversed(nodes):
            _stop_node(node)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _write_sweep(folder: Path, cluster: Cluster, sweep: dict, more: tuple = ()) -> None:
    """A pool of a device on each node (and `more`), and a sweep of two models over it."""
    on_head, on_second = cluster.devices
    devices = [{"name": on_head, "kind": "local", "cpus": 1, "node": "head", "tags": ["pool"]},
               {"name": on_second, "kind": "local", "cpus": 1, "node": "second",
                "tags": ["pool"]}, *more]
    (folder / "inventory.yaml").write_text(json.dumps({"devices": devices}))
    (folder / "sweep.yaml").write_text(json.dumps({
        "models": ["bert-tiny", "bert-mini"], "batch_sizes": [1], "devices": ["pool"],
        **sweep}))


def _rows(folder: Path, sql: str, *args) -> list[dict]:
    try:
        with sqlite3.connect(folder / "farm.db") as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql, args)]
    except sqlite3.OperationalError:  # not made yet
        return []


def _ran_on(folder: Path) -> set[tuple[str, str]]:
    """(device, Ray node id) of every result."""
    return {(r["device"], json.loads(r["env_json"])["ray_node"]) for r in _rows(
        folder, "select j.device, r.env_json from results r join jobs j on j.id = r.job_id")}


def test_a_sweep_runs_on_both_nodes_with_the_users_token_and_no_ray_variables(
        cluster, tmp_path):
    _write_sweep(tmp_path, cluster, {"name": "two-nodes", "seq_lens": [16], "measure": QUICK})
    done = farm_cli("submit", "sweep.yaml", "-i", "inventory.yaml", "--ray-address",
                    cluster.address, cwd=tmp_path, env=cluster.env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert [j["status"] for j in _rows(tmp_path, "select status from jobs")] == ["done"] * 2
    on_head, on_second = cluster.devices
    assert _ran_on(tmp_path) == {(on_head, cluster.head.node_id),
                                 (on_second, cluster.second.node_id)}


PLACE = """
import json, logging, sys
import ray
from farm.cluster import placement, use_token
from farm.errors import FarmError
use_token()
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
ip = ray.nodes()[0]["NodeManagerAddress"]
placed = {}
for node in sys.argv[2:] + [ip]:
    try:
        placed[node] = placement(node)["scheduling_strategy"].node_id
    except FarmError as error:
        placed[node] = [type(error).__name__, error.message, error.hint]
print(json.dumps({"ip": ip, "placed": placed}))
"""


def test_node_names_a_node_by_id_name_or_ip_and_an_ip_of_two_nodes_is_refused(cluster):
    head, second = cluster.head, cluster.second
    done = subprocess.run([sys.executable, "-c", PLACE, cluster.address, "head", "second",
                           head.node_id, "nowhere"], capture_output=True, text=True,
                          env=cluster.env(), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    ip, placed = json.loads(done.stdout.splitlines()[-1]).values()
    assert placed["head"] == placed[head.node_id] == head.node_id
    assert placed["second"] == second.node_id
    assert placed["nowhere"][:2] == ["DeviceUnreachable", "no live Ray node 'nowhere' for a "
                                                          "device's node:"]
    kind, message, hint = placed[ip]
    assert kind == "DeviceError" and message.startswith(f"2 live Ray nodes answer to node: {ip!r}")
    assert "'head'" in message and "'second'" in message and "--node-name" in hint


WORKERS = """
import json, logging, sys
import ray
from ray._private.state import actors
from farm.cluster import Unplaced, ask_events, close_workers, start_workers, use_token
from farm.inventory import load_inventory
use_token()
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
workers = start_workers(load_inventory(sys.argv[2]).devices)
nodes = {name: ray.get(worker.node.remote(), timeout=60) for name, worker in workers.items()
         if not isinstance(worker, Unplaced)}
alive = [(a["Address"]["NodeID"], a["Pid"]) for a in actors(
    job_id=ray.get_runtime_context().job_id, actor_state_name="ALIVE").values()
         if a["ActorClassName"] == "DeviceWorker"]
free = {name: value for name, value in ray.available_resources().items()
        if name.startswith("farm_device:")}
asked = ask_events(workers, sorted(nodes))
events = {}
for ref, devices in asked.items():
    events.update(ray.get(ref, timeout=60))
close_workers(workers)
print(json.dumps({"nodes": nodes, "alive": alive, "free": free, "asked": len(asked),
                  "events": events,
                  "unplaced": {n: w.error.message for n, w in workers.items()
                               if isinstance(w, Unplaced)}}))
"""


def test_the_devices_of_a_node_share_one_worker_that_holds_their_resources(cluster, tmp_path):
    """One Ray worker per node for the devices that must run there (pinned to it, or whose
    farm_device resource it declares), one for the devices that may run anywhere, and each
    declared resource held (a worker process per device cost a second of a core each at every
    sweep's start); their events are asked in one call per worker."""
    on_head, on_second = cluster.devices
    local = {"kind": "local", "cpus": 1}
    (tmp_path / "inventory.yaml").write_text(json.dumps({"devices": [
        {"name": on_head, **local}, {"name": f"{on_head}2", "node": "head", **local},
        {"name": on_second, **local}, {"name": f"{on_second}2", "node": "second", **local},
        {"name": f"{on_head}-any", **local},
        {"name": f"{on_head}-lost", "node": "gone", **local}]}))
    done = subprocess.run([sys.executable, "-c", WORKERS, cluster.address,
                           str(tmp_path / "inventory.yaml")], capture_output=True, text=True,
                          env=cluster.env(), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    head, second = cluster.head.node_id, cluster.second.node_id
    nodes = found["nodes"]
    assert {name: nodes[name] for name in (on_head, f"{on_head}2", on_second,
                                           f"{on_second}2")} == {
        on_head: head, f"{on_head}2": head, on_second: second, f"{on_second}2": second}
    assert nodes[f"{on_head}-any"] in (head, second)
    # three processes: the head's devices, the second node's, the one that may run anywhere
    assert sorted(node for node, _ in found["alive"]) == sorted([head, second,
                                                                 nodes[f"{on_head}-any"]])
    assert len({pid for _, pid in found["alive"]}) == 3
    # both declared resources held while the workers lived: no second worker could be placed
    assert found["free"].get(f"farm_device:{on_head}", 0) == 0
    assert found["free"].get(f"farm_device:{on_second}", 0) == 0
    assert found["unplaced"] == {f"{on_head}-lost": "no live Ray node 'gone' for a device's node:"}
    # the five devices' events asked in one call per worker process, each device answered
    assert found["asked"] == 3 and found["events"] == {name: [] for name in nodes}


@pytest.mark.parametrize("mode", [{}, {"RAY_AUTH_MODE": "token"}], ids=["as-is", "token-mode"])
def test_without_the_token_the_cluster_refuses_farm_with_a_hint(cluster, tmp_path, mode):
    _write_sweep(tmp_path, cluster, {"name": "no-token", "seq_lens": [16], "measure": QUICK})
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    # Ray's own wait for the GCS, shortened: it retries a refused connection for 20 s.
    done = farm_cli("submit", "sweep.yaml", "-i", "inventory.yaml", "--ray-address",
                    cluster.address, cwd=tmp_path, env=cluster.env(
                        HOME=str(stranger), RAY_gcs_server_port_wait_time_s="2", **mode))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "token authentication" in done.stderr and "~/.ray/auth_token" in done.stderr
    assert "Traceback" not in done.stderr
    assert _rows(tmp_path, "select * from jobs") == []


# A timing window long enough that a kill lands in it: on a loaded machine the job's "timing"
# phase reached the database 3 s late once, and the job ended done before the kill.
LONG = {"warmup": 1, "min_iters": 3, "min_seconds": 10.0}


@contextlib.contextmanager
def _submitted(folder: Path, address: str, env: dict):
    """`farm submit` of folder's sweep on the cluster, running; killed if the test ends first."""
    farm = subprocess.Popen(
        [FARM, "submit", "sweep.yaml", "-i", "inventory.yaml", "--ray-address", address],
        cwd=folder, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        yield farm
    finally:
        if farm.poll() is None:
            os.killpg(farm.pid, signal.SIGKILL)
            farm.wait()


def _timing_on(farm: subprocess.Popen, folder: Path, device: str) -> dict:
    """The job of device's once it is in its timed window."""
    deadline = time.monotonic() + 120
    while not _rows(folder, "select key from jobs where status = 'running' and "
                            "phase = 'timing' and device = ?", device):
        assert farm.poll() is None, farm.communicate()
        assert time.monotonic() < deadline, f"no job reached its timing on {device}"
        time.sleep(0.2)
    return _rows(folder, "select id, key from jobs where device = ?", device)[0]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_device_another_farm_holds_on_the_cluster_is_refused_at_once_naming_that_run(
        cluster, tmp_path):
    """Two users' farms share the cluster and one device: the second is refused (Busy, exit 5)
    by the device's lock as it readies it, naming the run that holds it, and writes nothing;
    its worker waited, unplaced and silent, for the first's resource until that run ended."""
    on_head, _ = cluster.devices
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "inventory.yaml").write_text(json.dumps({"devices": [
            {"name": on_head, "kind": "local", "cpus": 1, "node": "head"}]}))
        (tmp_path / name / "sweep.yaml").write_text(json.dumps({
            "name": name, "models": ["bert-tiny"], "batch_sizes": [1], "seq_lens": [32],
            "measure": LONG, "devices": [on_head]}))
    with _submitted(tmp_path / "first", cluster.address, cluster.env()) as first:
        _timing_on(first, tmp_path / "first", on_head)
        with _submitted(tmp_path / "second", cluster.address, cluster.env()) as second:
            stdout, stderr = second.communicate(timeout=60)
            assert first.poll() is None, "the first run ended before the second was refused"
        assert second.returncode == 5, stdout + stderr
        assert (f"device {on_head!r} is in use by another farm run: sweep 'first'" in stderr
                and "Traceback" not in stderr), stderr
        assert _rows(tmp_path / "second", "select * from jobs") == []
        done = first.communicate(timeout=120)
    assert first.returncode == 0, done
    assert [j["status"] for j in _rows(tmp_path / "first", "select status from jobs")] == ["done"]


def test_a_worker_process_that_dies_takes_all_its_devices_and_its_job_goes_to_another_node(
        cluster, tmp_path):
    """The head's two devices share one Ray worker; it is killed while one of them runs a job
    and the other is idle. Both are out of the run at once (the idle one handed the retry
    would only have failed it again), and the job runs on the second node's device."""
    on_head, on_second = cluster.devices
    # Named to come after the second node's device: the sweep's two jobs go to the first two
    # devices by name, so this one is idle when the worker dies.
    idle = f"{on_second[:-2]}-t"
    _write_sweep(tmp_path, cluster, {"name": "lost-worker", "seq_lens": [32], "measure": LONG},
                 more=[{"name": idle, "kind": "local", "cpus": 1, "node": "head",
                        "tags": ["pool"]}])
    with _submitted(tmp_path, cluster.address, cluster.env()) as farm:
        killed = _timing_on(farm, tmp_path, on_head)["id"]
        agents = [pid for pid, argv in descendants(cluster.head.raylet).items()
                  if argv[1:3] == [b"-m", b"agents"]]
        # each device's agent, started as it was readied, a child of the one worker
        assert len(agents) == 2 and len({_parent(pid) for pid in agents}) == 1, agents
        os.kill(_parent(agents[0]), signal.SIGKILL)
        stdout, stderr = farm.communicate(timeout=180)
    assert farm.returncode == 0, stdout + stderr
    assert [j["status"] for j in _rows(tmp_path, "select status from jobs")] == ["done"] * 2
    attempts = _rows(tmp_path, "select * from attempts order by job_id, attempt")
    assert [(a["job_id"] == killed, a["device"], a["status"], a["failure"])
            for a in attempts if a["job_id"] == killed] == [
        (True, on_head, "failed", "infra"), (True, on_second, "done", None)]
    assert idle not in {a["device"] for a in attempts}, attempts
    states = {d["device"]: d for d in _rows(tmp_path, "select * from v_devices")}
    assert states[on_head]["state"] == states[idle]["state"] == "error", states
    assert (f"device {idle!r} lost its Ray worker, which it shared with {on_head!r}"
            in states[idle]["last_error"]), states[idle]
    assert _ran_on(tmp_path) == {(on_second, cluster.second.node_id)}


def test_a_node_killed_mid_job_sends_its_job_to_the_other_node_and_its_device_offline(
        cluster, tmp_path):
    """Run last: the second node does not come back."""
    on_head, on_second = cluster.devices
    # A third device's node left before the sweep: that device alone is refused.
    gone = {"name": f"{on_head[:-2]}-g", "kind": "local", "node": "gone", "tags": ["pool"]}
    _write_sweep(tmp_path, cluster, {"name": "lost-node", "seq_lens": [32], "measure": LONG},
                 more=[gone])
    # The token from RAY_AUTH_TOKEN this time, with no ~/.ray/auth_token.
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    with _submitted(tmp_path, cluster.address, cluster.env(
            HOME=str(stranger), RAY_AUTH_TOKEN=cluster.token)) as farm:
        killed = _timing_on(farm, tmp_path, on_second)
        agents = [pid for pid, argv in descendants(cluster.second.raylet).items()
                  if argv[1:3] == [b"-m", b"agents"]]
        assert len(agents) == 1
        os.kill(cluster.second.raylet, signal.SIGKILL)
        stdout, stderr = farm.communicate(timeout=180)
    assert farm.returncode == 0, stdout + stderr
    assert not _running(agents[0]), "the lost node's agent still runs"
    assert [j["status"] for j in _rows(tmp_path, "select status from jobs")] == ["done"] * 2
    attempts = _rows(tmp_path, "select * from attempts where job_id = ? order by attempt",
                     killed["id"])
    assert [(a["device"], a["status"], a["failure"]) for a in attempts] == [
        (on_second, "failed", "infra"), (on_head, "done", None)]
    assert "Ray node 'second'" in attempts[0]["error"], attempts[0]["error"]
    device = _rows(tmp_path, "select * from v_devices where device = ?", on_second)[0]
    assert device["state"] == "offline", device
    assert f"device {on_second!r} went offline: Ray node 'second'" in device["last_error"]
    assert _ran_on(tmp_path) == {(on_head, cluster.head.node_id)}
    refused = _rows(tmp_path, "select * from v_devices where device = ?", gone["name"])[0]
    assert refused["state"] == "offline" and "no live Ray node 'gone'" in refused["last_error"]
    listed = farm_cli("devices", "-i", "inventory.yaml", cwd=tmp_path,
                      env=cluster.env(COLUMNS="200"))
    line = next(line for line in listed.stdout.splitlines() if on_second in line)
    assert "Ray node second" in line and "offline" in line, listed.stdout


_RENICED = """
import os, subprocess, sys, threading
from farm.cluster import run_at_niceness

os.nice(15)  # as Ray starts a worker: every thread at 15
go = threading.Event()
def start_agent():  # a thread from before, as the worker's second one: it starts an agent
    go.wait()
    asked = "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"
    print(subprocess.run([sys.executable, "-c", asked], capture_output=True,
                         text=True).stdout.strip())
thread = threading.Thread(target=start_agent)
thread.start()
print(run_at_niceness(int(sys.argv[1])))
print(sorted({open("/proc/self/task/%s/stat" % task).read().rsplit(")", 1)[1].split()[16]
              for task in os.listdir("/proc/self/task")}))
go.set()
thread.join()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering a niceness needs root here")
def test_a_device_worker_runs_its_agents_at_the_niceness_asked_not_rays():
    ran = subprocess.run([sys.executable, "-c", _RENICED, "3"], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    # the calling thread, every thread of the process, an agent started from an older thread
    assert ran.stdout.split("\n")[:3] == ["3", "['3']", "3"], ran.stdout
