"""farm's private local Ray instance when Ray's own start gives up, as it did on the one slow
core of the cgroup v2 test kernel: the raylet ended (it gave its agents a fixed time to come
up) and its node never registered. farm stops waiting for that node at once (not its own
240 s, nor Ray's 30), stops every process the start left, and starts the instance again."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path

import ray
from ray._private import services

from conftest import QUICK, descendants, farm_cli
from farm import cluster


def _processes() -> list[tuple[str, int]]:
    """(name, pid) of every process below this one: a Python script's file name, else the
    program's (or the title Ray gave the process, ray::DashboardAgent)."""
    named = []
    for pid, argv in descendants(os.getpid()).items():
        scripts = [Path(arg.decode()).name for arg in argv[1:] if arg.endswith(b".py")]
        named.append((scripts[0] if scripts else Path(argv[0].decode()).name, pid))
    return named


def _ray_processes() -> list[tuple[str, int]]:
    """(name, pid) of the gcs_server and raylet processes below this one."""
    return sorted((name, pid) for name, pid in _processes() if name in ("gcs_server", "raylet"))


def test_a_start_that_gives_up_is_stopped_and_started_again(monkeypatch):
    real, unseen = services.get_node, []

    def first_node_never_registers(gcs_address, node_id):
        if unseen in ([], [node_id]):  # the first start's node: its raylet ends, never there
            if not unseen:
                raylet, = [pid for name, pid in _ray_processes() if name == "raylet"]
                os.kill(raylet, signal.SIGKILL)
            unseen[:] = [node_id]
            raise RuntimeError(f"node {node_id} not found")
        return real(gcs_address, node_id)

    monkeypatch.setattr(services, "get_node", first_node_never_registers)
    assert not ray.is_initialized()
    started = time.monotonic()
    try:
        cluster.start_local_instance(num_cpus=1, include_dashboard=False,
                                     object_store_memory=80 * 2**20, log_to_driver=False)
        took = time.monotonic() - started
        assert unseen, "the first start was not the one that gave up"
        assert ray.get_runtime_context().get_node_id() != unseen[0]
        # one node's processes: the first start's gcs_server was stopped
        assert [name for name, _ in _ray_processes()] == ["gcs_server", "raylet"]
        # none of the head's processes that do nothing for a private instance: the dashboard's
        # head, the autoscaler's monitor, the log monitor (the raylet's agents stay)
        names = {name for name, _ in _processes()}
        assert "ray::DashboardAgent" in names, names
        assert not names & {"dashboard.py", "monitor.py", "log_monitor.py"}, names
    finally:
        ray.shutdown()
    assert services.get_node is first_node_never_registers  # put back after the start
    # a node whose raylet has ended is given up at once: neither farm's 240 s nor Ray's own 30
    assert took < 30, took


def test_the_node_is_looked_up_once_it_is_listed(monkeypatch):
    """Ray's own look for a node that has not registered yet waits a whole second before it
    asks again, and the node of a local start registers a moment after the first ask: farm
    waits for the node in the GCS's table (asked every 50 ms) and only then asks Ray, whose
    look then finds it at once. And a node that never registers is waited for no longer than
    the deadline, nor at all once its raylet is gone."""
    from ray._private import state

    real, asked = services.get_node, []

    def listed_when_asked(gcs_address, node_id):
        table = state.GlobalState()
        table._initialize_global_state(services._get_gcs_client_options(gcs_address))
        asked.append(any(node["NodeID"] == node_id and node["Alive"]
                         for node in table.node_table()))
        return real(gcs_address, node_id)

    monkeypatch.setattr(services, "get_node", listed_when_asked)
    try:
        cluster.start_local_instance(num_cpus=1, include_dashboard=False,
                                     object_store_memory=80 * 2**20, log_to_driver=False)
        assert asked == [True]
        gcs = ray._private.worker.global_worker.node.gcs_address
        here = ray.get_runtime_context().get_node_id()
        started = time.monotonic()
        cluster.registered(gcs, here, started + 30, lambda: False)
        assert time.monotonic() - started < 5  # listed: no wait for the deadline
        nowhere = "ff" * 28
        started = time.monotonic()
        cluster.registered(gcs, nowhere, started + 0.5, lambda: False)
        assert time.monotonic() - started >= 0.5
        started = time.monotonic()
        cluster.registered(gcs, nowhere, started + 30, lambda: True)
        assert time.monotonic() - started < 5  # its raylet gone: no wait at all
    finally:
        ray.shutdown()


def test_farms_own_ray_runs_without_rays_memory_monitor_and_a_stop_by_it_is_said_plainly(
        tmp_path):
    """Ray's memory monitor stops a Ray worker once its node's memory passes a threshold (95%):
    here 1% of this machine's, which every run passes. farm's private instance runs without it,
    and the sweep is done. Asked for by RAY_memory_monitor_refresh_ms, the monitor stops the
    device's worker, and farm says so in a line: it was an internal error with Ray's page of
    process tables, exit 70."""
    (tmp_path / "inventory.yaml").write_text(json.dumps({"devices": [
        {"name": f"mm-{uuid.uuid4().hex[:6]}", "kind": "local", "cpus": 1}]}))
    (tmp_path / "sweep.yaml").write_text(json.dumps({
        "name": "monitor", "models": ["bert-tiny"], "batch_sizes": [1], "seq_lens": [16],
        "measure": QUICK}))
    over = dict(os.environ, RAY_memory_usage_threshold="0.01")
    done = farm_cli("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path, env=over)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 job (1 done" in done.stdout, done.stdout
    stopped = farm_cli("submit", "sweep.yaml", "-i", "inventory.yaml", "--db", "stopped.db",
                       cwd=tmp_path, env=dict(over, RAY_memory_monitor_refresh_ms="100"))
    # exit 3: no usable device, whether the monitor stopped the worker as it readied the device
    # (the first task it ran: the usual) or during the job
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert "internal error" not in stopped.stderr and "Traceback" not in stopped.stderr
    with sqlite3.connect(tmp_path / "stopped.db") as db:
        why = db.execute("select last_error from v_devices").fetchone()
    said = "Ray's memory monitor stopped it: its node's memory was over Ray's threshold"
    assert said in stopped.stderr or (why and said in why[0]), (stopped.stderr, why)
