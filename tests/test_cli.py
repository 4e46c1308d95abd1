"""The `farm` command as a person runs it: a real process, its output and its exit code."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import QUICK
from farm.cli import app
from farm.store import Store

FARM = str(Path(sys.executable).parent / "farm")


def _farm(*args, env=None, cwd=None, timeout=300):
    return subprocess.run([FARM, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})), cwd=cwd)


def test_every_command_has_help():
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert "submit" in names
    for name in names:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage" in result.output and len(result.output.splitlines()) > 3


@pytest.mark.parametrize("inventory, sweep, field", [
    ("devices:\n  - name: a\n    kind: cgroup\n    memory: 2XB\n", None,
     "inventory.yaml:4: devices[0].memory"),
    ("devices:\n  - {name: a, kind: cgroup, memory: 1GiB}\n  - {name: a, kind: local}\n", None,
     "inventory.yaml:2: devices: device name 'a' appears twice"),
    (None, "name: s\nmodels: [bert-tiny]\nbatch_sizes: [0]\n", "sweep.yaml:3: batch_sizes[0]"),
    (None, "name: s\nmodels: [bert-tiny]\nvariants: [fp8]\n", "sweep.yaml:3: variants"),
    (None, "name: s\ndevices: [nano-9gb]\nmodels: [bert-tiny]\n", "sweep.yaml: devices[0]"),
    (None, "name: s\nmodels: [bert-huge]\n", "sweep.yaml:2: models"),
    (None, "name: s\nmodels: [bert-tiny]\ntasks: [squad]\n", "sweep.yaml:3: tasks"),
    (None, "name: s\nmodels: [bert-tiny\n", "sweep.yaml:3: (yaml): invalid YAML"),
    (None, "name: s\nmodels: [bert-tiny]\nretries: -1\n", "sweep.yaml:3: retries"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, inventory, sweep, field):
    """Each bad input: exit 2, one line naming the file, line and field, and not one new row in
    a database that already holds a sweep."""
    (tmp_path / "inventory.yaml").write_text(
        inventory or "devices:\n  - {name: a, kind: cgroup, memory: 1GiB}\n")
    (tmp_path / "sweep.yaml").write_text(sweep or "name: s\nmodels: [bert-tiny]\n")
    Store(f"sqlite:///{tmp_path / 'farm.db'}").close()  # an existing database, migrated
    before = _row_counts(tmp_path / "farm.db")
    done = _farm("submit", "sweep.yaml", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and field in lines[0]
    assert len(lines) == 2 and lines[1].startswith("hint: ")
    assert "Traceback" not in done.stderr
    assert _row_counts(tmp_path / "farm.db") == before


def _row_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        tables = [t for (t,) in db.execute("select name from sqlite_master where type = 'table'")]
        return {t: db.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}


def test_resubmitting_a_finished_sweep_writes_no_rows(tmp_path):
    """The second submit of an unchanged file must not add jobs or run anything."""
    (tmp_path / "inventory.yaml").write_text("devices:\n  - {name: box, kind: local, cpus: 1}\n")
    (tmp_path / "sweep.yaml").write_text(json.dumps(
        {"name": "s", "models": ["bert-tiny"], "seq_lens": [16], "measure": QUICK}))
    first = _farm("submit", "sweep.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = _farm("submit", "sweep.yaml", cwd=tmp_path)
    assert second.returncode == 0 and "ran 0 now" in second.stdout
    with sqlite3.connect(tmp_path / "farm.db") as db:
        assert db.execute("select count(*), sum(attempts) from jobs").fetchone() == (1, 1)
        assert db.execute("select memory_limit_mb, container_peak_mb, process_peak_mb > 0 "
                          "from results").fetchone() == (None, None, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path, device_names):
    """A Ray head started apart from farm (`ray start --head --block`), stopped by its pid."""
    port, name = _free_port(), device_names(1)[0]
    env = dict(os.environ, RAY_AUTH_MODE="token")
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
         "--block", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--resources={json.dumps({f'farm_device:{name}': 1})}"],
        stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT, env=env,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in (tmp_path / "head.log").read_text():
            assert head.poll() is None and time.monotonic() < deadline, (
                (tmp_path / "head.log").read_text())
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", name, env
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def _node_ids(address: str, env: dict) -> list[str]:
    script = (f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
              "print(' '.join(n['NodeID'] for n in ray.nodes()))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    return done.stdout.split()


def test_ray_address_drives_a_separately_started_cluster(cgroups, tmp_path, ray_cluster):
    address, name, env = ray_cluster
    [node] = _node_ids(address, env)
    (tmp_path / "inventory.yaml").write_text(
        f"devices:\n  - {{name: {name}, kind: cgroup, memory: 1GiB, cpus: 1, node: {node}}}\n")
    (tmp_path / "sweep.yaml").write_text(json.dumps(
        {"name": "cluster", "models": ["bert-tiny"], "batch_sizes": [1, 2], "seq_lens": [16],
         "measure": QUICK}))
    done = _farm("submit", "sweep.yaml", "--ray-address", address, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    with sqlite3.connect(tmp_path / "farm.db") as db:
        statuses = db.execute("select status from jobs").fetchall()
        envs = [json.loads(e) for (e,) in db.execute("select env_json from results")]
    assert statuses == [("done",), ("done",)]
    assert [e["ray_node"] for e in envs] == [node, node]


def test_ctrl_c_says_so_then_cancels_running_and_queued_jobs(cgroups, tmp_path,
                                                                    device_names):
    name = device_names(1)[0]
    (tmp_path / "inventory.yaml").write_text(
        f"devices:\n  - {{name: {name}, kind: cgroup, memory: 1GiB, cpus: 1}}\n")
    (tmp_path / "sweep.yaml").write_text(json.dumps(
        {"name": "long", "models": ["bert-tiny"], "batch_sizes": [1, 2], "seq_lens": [16],
         "measure": {"warmup": 1, "min_iters": 1, "min_seconds": 300}}))
    farm = subprocess.Popen([FARM, "submit", "sweep.yaml"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while _phase(tmp_path / "farm.db") != "timing":
            assert farm.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        farm.send_signal(signal.SIGINT)
        stdout, stderr = farm.communicate(timeout=60)
    finally:
        farm.kill()
    assert farm.returncode == 130 and "interrupted" in stderr
    assert "cancelling the sweep: stopping 1 running job(s)" in stdout
    with sqlite3.connect(tmp_path / "farm.db") as db:
        statuses = sorted(s for (s,) in db.execute("select status from jobs"))
        attempts = db.execute("select status from attempts").fetchall()
    assert statuses == ["cancelled", "cancelled"] and attempts == [("cancelled",)]


def _phase(db_path: Path) -> str | None:
    try:
        with sqlite3.connect(db_path) as db:
            row = db.execute("select phase from jobs where status = 'running'").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None
