import os
import sqlite3
import subprocess
import sys

import pytest
from alembic.script import ScriptDirectory

from conftest import REPO
from farm.errors import StoreError
from farm.inventory import Inventory
from farm.store import MIGRATIONS_DIR, Store, resolve_url
from farm.sweep import Sweep, expand
from farm.store.schema import DEVICE_READINGS

V_RESULTS_CONTRACT = [
    "sweep", "job_key", "device", "model", "variant", "task", "batch_size", "seq_len", "status",
    "error", "attempts", "started_at", "finished_at", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
    "per_sample_ms", "throughput", "peak_mem_mb", "flops", "params", "energy_mj", "metric",
    "score"]


def _sweep_and_jobs(batch_sizes=(1, 8)):
    sweep = Sweep(name="s", models=["bert-tiny"], batch_sizes=batch_sizes)
    inventory = Inventory(devices=[{"name": "d", "kind": "local"}])
    return sweep, inventory, expand(sweep, ["d"])


def test_url_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("FARM_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'farm.db'}"
    monkeypatch.setenv("FARM_DB", "other.db")
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'other.db'}"
    assert resolve_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_open_migrates_and_uses_wal(tmp_path):
    Store(str(tmp_path / "a.db")).close()
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in db.execute("pragma table_info(v_results)")]
        head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
        assert db.execute("select version_num from alembic_version").fetchone()[0] == head
    assert [c for c in V_RESULTS_CONTRACT if c not in columns] == []


def test_alembic_cli_honours_farm_db_and_reports_no_drift(tmp_path):
    env = dict(os.environ, FARM_DB=str(tmp_path / "cli.db"))
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini")]
    subprocess.run(alembic + ["upgrade", "head"], env=env, check=True, cwd=tmp_path)
    check = subprocess.run(alembic + ["check"], env=env, cwd=tmp_path, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr
    assert (tmp_path / "cli.db").exists()


def test_resubmitting_adds_only_new_jobs(db_url):
    store = Store(db_url)
    sweep, inventory, jobs = _sweep_and_jobs()
    first = store.add_sweep(sweep, "s.yaml", inventory, jobs)
    again = store.add_sweep(sweep, "s.yaml", inventory, jobs)
    assert (first.new_jobs, again.new_jobs, again.known_jobs) == (2, 0, 2)
    sweep3, _, jobs3 = _sweep_and_jobs((1, 8, 16))
    grown = store.add_sweep(sweep3, "s.yaml", inventory, jobs3)
    assert (grown.new_jobs, grown.known_jobs, grown.id) == (1, 2, first.id)
    assert store.status_counts(first.id) == {"queued": 3}


def test_finished_jobs_are_not_runnable_and_results_land_in_v_results(db_url):
    store = Store(db_url)
    sweep, inventory, jobs = _sweep_and_jobs()
    submitted = store.add_sweep(sweep, "s.yaml", inventory, jobs)
    queued = store.runnable_jobs(submitted.id, {j.key for j in jobs})
    store.job_started(queued[0].id, "d")
    store.job_finished(queued[0].id, {
        "status": "done", "device": "d", "started_at": 1000.0, "finished_at": 1001.5,
        "error": None, "result": {"p50_ms": 2.5, "peak_mem_mb": 300.0, "latencies_ms": [2.5]}})
    assert [j.key for j in store.runnable_jobs(submitted.id, {j.key for j in jobs})] == [
        queued[1].key]
    row = next(r for r in store.sweep_results("s") if r["job_key"] == queued[0].key)
    assert (row["status"], row["p50_ms"], row["peak_mem_mb"], row["attempts"]) == (
        "done", 2.5, 300.0, 1)
    assert row["energy_mj"] is None and row["score"] is None  # never measured, never invented


def test_unopenable_url_is_a_store_error(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError) as caught:
        Store(str(tmp_path / "dir.db"))
    assert "cannot open database" in str(caught.value)


def test_a_devices_latest_reading_is_found_from_its_partial_index(tmp_path):
    """`farm status` reads each device's latest board reading (power, RAM, temperature,
    throttling): from an index holding only the results that have it, so that a device that
    never reports one is answered at once, however many results it has."""
    Store(str(tmp_path / "a.db")).close()
    with sqlite3.connect(tmp_path / "a.db") as db:
        made = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                               "tbl_name = 'results' AND name LIKE 'ix_results_device_%'"))
        assert sorted(made) == sorted(DEVICE_READINGS)
        for name, column in DEVICE_READINGS.items():
            assert made[name].endswith(f"(device, id) WHERE {column} IS NOT NULL"), made[name]
            plan = " ".join(row[3] for row in db.execute(
                f"EXPLAIN QUERY PLAN SELECT r.{column} FROM results r WHERE r.device = 'nano-1' "
                f"AND r.{column} IS NOT NULL ORDER BY r.id DESC LIMIT 1"))
            assert f"USING INDEX {name} (device=?)" in plan, plan
