"""PostgreSQL as a lab's shared results database: Debian's postgresql, started here on 127.0.0.1
in a temporary data directory; farm's migrations on it, two controllers writing to it at once,
and `farm sql` kept read-only there."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from conftest import FARM, farm_cli
from farm.api import sql
from farm.errors import QueryError, StoreError
from farm.store import Store, driver_url
from farm.store.clock import from_epoch
from farm.store.readonly import ReadOnly
from farm.store.schema import Base, Job, Sweep

# The shortest job that still times a call (a test of the database, not of the measurement).
BRIEF = {"warmup": 0, "min_iters": 1, "min_seconds": 0}


def _server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin/ (Debian keeps each major version apart)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A PostgreSQL server of the test's own: `database()` makes an empty database, its URL."""

    def __init__(self, port: int):
        self.port = port

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def database(self) -> str:
        name = f"farm_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.conninfo(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def connect(self, url: str) -> psycopg.Connection:
        """The database of farm's `url`, reached past farm."""
        return psycopg.connect(self.conninfo(url.rsplit("/", 1)[1]))


@pytest.fixture(scope="module")
def postgres():
    """initdb into a temporary directory, the server on 127.0.0.1 (a free port; its socket in
    that directory); stopped by its pid and removed after the module. As root the server runs
    as Debian's `postgres` user: PostgreSQL refuses to run as root."""
    binaries = _server_binaries()
    if binaries is None:
        problem = "no PostgreSQL server here (/usr/lib/postgresql/*/bin/postgres)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must have PostgreSQL: {problem}")
        pytest.skip(f"{problem}: `make postgres` installs Debian's postgresql")
    owner = {}
    root = Path(tempfile.mkdtemp(prefix="farm-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        owner = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        os.chown(root, user.pw_uid, user.pw_gid)
    data, log, port = root / "data", root / "server.log", _free_port()
    server = None
    try:
        subprocess.run([binaries / "initdb", "-D", data, "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"],
                       check=True, capture_output=True, **owner)
        server = subprocess.Popen(
            [binaries / "postgres", "-D", data, "-h", "127.0.0.1", "-p", str(port),
             "-k", root, "-F"], stdout=log.open("w"), stderr=subprocess.STDOUT, **owner)
        started = Postgres(port)
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(started.conninfo(), connect_timeout=1).close()
                break
            except psycopg.OperationalError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield started
    finally:
        if server is not None:
            server.send_signal(signal.SIGQUIT)  # immediate shutdown: its data goes next
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(root, ignore_errors=True)


def _columns(url: str, relation: str) -> list[str]:
    reader = ReadOnly(url)
    try:
        return reader.query(f"SELECT * FROM {relation} WHERE 1 = 0")[0]
    finally:
        reader.close()


def _revision(url: str) -> list[tuple]:
    reader = ReadOnly(url)
    try:
        return reader.query("SELECT version_num FROM alembic_version")[1]
    finally:
        reader.close()


def test_migrations_reach_head_with_the_views_sqlite_has(postgres, tmp_path):
    url = postgres.database()
    Store(url).close()  # an empty database, migrated to head
    Store(url).close()  # and opened again: nothing left to do
    sqlite = Store(str(tmp_path / "farm.db"))
    sqlite.close()
    for relation in ("v_results", "v_latest", "v_devices", "results", "jobs", "model_loads",
                     "sweeps", "devices", "runs", "attempts", "metrics", "predictions"):
        assert _columns(url, relation) == _columns(sqlite.url, relation), relation
    assert _revision(url) == _revision(sqlite.url)
    engine = create_engine(driver_url(url))
    with engine.connect() as connection:  # the tables as farm declares them, types included
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_counts_past_32_bits_are_stored(postgres):
    """BERT-base's ~22 GFLOPs per sample and a 3 GB layer store, stored and read back."""
    store = Store(postgres.database())
    now = time.time()
    with store._write() as db:
        sweep = Sweep(name="big", source="/big.yaml", spec_json="{}", inventory_json="{}",
                      created_at=from_epoch(now), updated_at=from_epoch(now))
        db.add(sweep)
        db.flush()
        job = Job(sweep_id=sweep.id, key="k", target="box", model="bert-base", variant="fp32",
                  task="synthetic", batch_size=1, seq_len=128, spec_json="{}", status="queued",
                  attempts=0, created_at=from_epoch(now))
        db.add(job)
    store.job_started(job.id, "box")
    load = {"load_key": uuid.uuid4().hex, "model": {"name": "bert-base"}, "variant": "fp32",
            "params": 109_482_240, "layer_store_bytes": 3_000_000_000}
    store.job_finished(job.id, {"status": "done", "device": "box", "started_at": now,
                                "finished_at": now + 1, "result": {
                                    "p50_ms": 90.0, "flops": 22_353_100_800,
                                    "params": 109_482_240, "nonzero_params": 109_482_240,
                                    "load": load}})
    store.close()
    reader = ReadOnly(store.url)
    assert reader.rows("SELECT v.flops, v.params, l.layer_store_bytes FROM v_results v "
                       "JOIN model_loads l ON l.id = v.load_id") == [
        {"flops": 22_353_100_800, "params": 109_482_240, "layer_store_bytes": 3_000_000_000}]
    reader.close()


def _controller(tmp_path: Path, sweep: str, device: str, url: str) -> subprocess.Popen:
    """`farm submit` of a sweep of three bert-tiny jobs on a device of its own."""
    folder = tmp_path / sweep
    folder.mkdir()
    (folder / "inventory.yaml").write_text(json.dumps(
        {"devices": [{"name": device, "kind": "local", "cpus": 1}]}))
    (folder / "sweep.yaml").write_text(json.dumps(
        {"name": sweep, "models": ["bert-tiny"], "batch_sizes": [1, 2, 4], "seq_lens": [16],
         "measure": BRIEF}))
    return subprocess.Popen([FARM, "submit", "sweep.yaml", "--db", url], cwd=folder, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_controllers_at_once_lose_no_result(postgres, tmp_path, device_names):
    url = postgres.database()  # empty: both controllers migrate it, one after the other
    controllers = [_controller(tmp_path, sweep, device, url)
                   for sweep, device in zip(("left", "right"), device_names(2))]
    for farm in controllers:
        stdout, stderr = farm.communicate(timeout=240)
        assert farm.returncode == 0, stdout[-2000:] + stderr[-2000:]

    with postgres.connect(url) as db:
        per_job = db.execute(
            "SELECT s.name, j.key, j.status, COUNT(r.id) FROM jobs j "
            "JOIN sweeps s ON s.id = j.sweep_id LEFT JOIN results r ON r.job_id = j.id "
            "GROUP BY s.name, j.key, j.status").fetchall()
        runs = db.execute("SELECT sweep, outcome, started_at, ended_at FROM runs").fetchall()
    counts = {sweep: sorted((status, n) for name, _, status, n in per_job if name == sweep)
              for sweep in ("left", "right")}
    print("results per job, by sweep:", counts)
    assert counts == {"left": [("done", 1)] * 3, "right": [("done", 1)] * 3}
    assert sorted(outcome for _, outcome, _, _ in runs) == ["finished", "finished"]
    assert max(r[2] for r in runs) < min(r[3] for r in runs), runs  # they did run at once

    status = farm_cli("status", "--once", "--db", url)
    assert status.returncode == 0, status.stderr
    assert "left" in status.stdout and "right" in status.stdout, status.stdout
    assert status.stdout.count("3/3") == 2, status.stdout

    exported = farm_cli("export", "left", "--format", "json", "--out",
                        str(tmp_path / "left.json"), "--db", url)
    assert exported.returncode == 0, exported.stderr
    records = json.loads((tmp_path / "left.json").read_text())
    assert sorted(r["batch_size"] for r in records) == [1, 2, 4]
    assert all(r["finished_at"].endswith("+00:00") and r["latencies_ms"] for r in records)

    count = farm_cli("sql", "select count(*) as n from v_results", "--csv", "--db", url)
    assert count.returncode == 0 and count.stdout.split() == ["n", "6"], count.stderr
    refused = farm_cli("sql", "delete from results", "--db", url)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith("error: farm sql is read-only"), refused.stderr
    assert len(refused.stderr.splitlines()) == 2  # the error and its hint
    # Several statements would end the READ ONLY transaction and write after it.
    with pytest.raises(QueryError, match="read-only and runs one statement at a time"):
        sql("commit; delete from results", url)
    with postgres.connect(url) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone() == (6,)


def test_a_server_out_of_reach_is_one_error_without_its_password():
    url = f"postgresql://farm:s3cret@127.0.0.1:{_free_port()}/results"
    for open_it in (Store, lambda u: ReadOnly(u).query("SELECT 1")):
        with pytest.raises(StoreError) as caught:
            open_it(url)
        assert "127.0.0.1" in str(caught.value) and "s3cret" not in str(caught.value)
