"""Nothing lost when things break: the controller killed with SIGKILL, an agent killed from
outside, a job that hangs, `farm cancel` from another terminal, and a second submit at once.
Real `farm` processes, real Ray, real cgroups; the processes are killed by real signals.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


from farm.cgroups import own_cgroup_paths

FARM = str(Path(sys.executable).parent / "farm")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _farm(*args, cwd, timeout=300):
    return subprocess.run([FARM, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _start(*args, cwd) -> subprocess.Popen:
    # Its own session, so that what Ray leaves behind after a SIGKILL can be stopped by group.
    return subprocess.Popen([FARM, *args], cwd=cwd, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def _stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def _rows(cwd: Path, sql: str, *args) -> list[dict]:
    try:
        with sqlite3.connect(cwd / "farm.db") as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql, args)]
    except sqlite3.OperationalError:  # the database is not made yet
        return []


def _wait_for(what, timeout=120, process=None):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert process is None or process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def _agent_pids(name: str) -> list[int]:
    """The processes in a cgroup device's container (v1 memory hierarchy, or v2)."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        base = CGROUP_ROOT
    else:
        base = CGROUP_ROOT / "memory" / own_cgroup_paths().get("memory", "/").lstrip("/")
    # v2: each agent in a leaf of its own below the device's cgroup
    return [int(p) for procs in (base / "farm" / name).rglob("cgroup.procs")
            for p in procs.read_text().split()]


def _setup(tmp_path: Path, names: list[str], sweep: dict) -> None:
    devices = [{"name": n, "kind": "cgroup", "memory": "2GiB", "cpus": 1, "tags": ["pool"]}
               for n in names]
    (tmp_path / "inventory.yaml").write_text(json.dumps({"devices": devices}))
    (tmp_path / "sweep.yaml").write_text(json.dumps({"devices": ["pool"], **sweep}))


def _timing(cwd: Path, device: str | None = None) -> list[dict]:
    return [r for r in _rows(cwd, "select * from jobs where status = 'running' and phase = "
                                  "'timing'") if device in (None, r["device"])]


def test_kill_9_of_the_controller_then_the_same_submit_ends_every_job_once(
        cgroups, tmp_path, device_names):
    name, = device_names(1)
    _setup(tmp_path, [name], {"name": "crash", "models": ["bert-tiny"],
                              "batch_sizes": [1, 2, 4, 8], "seq_lens": [32],
                              "measure": {"warmup": 1, "min_iters": 3, "min_seconds": 2.0}})
    first = _start("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path)
    try:
        _wait_for(lambda: _rows(tmp_path, "select 1 from jobs where status = 'done'")
                  and _timing(tmp_path), process=first)
        before = {r["key"]: r for r in _rows(
            tmp_path, "select j.key, j.finished_at, r.id as result_id, r.created_at from jobs j "
                      "join results r on r.job_id = j.id where j.status = 'done'")}
        running = _timing(tmp_path)[0]["key"]
        os.kill(first.pid, signal.SIGKILL)  # the controller alone, as a crash would
        first.wait(timeout=30)
    finally:
        _stop_group(first)
    _wait_for(lambda: not _agent_pids(name), timeout=30)  # its agent follows its parent out

    again = _farm("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stopped without ending" in again.stdout and "1 running job(s) were requeued" in \
        again.stdout
    jobs = _rows(tmp_path, "select j.key, j.status, j.finished_at, r.id as result_id, "
                           "r.created_at from jobs j left join results r on r.job_id = j.id")
    assert len(jobs) == 4 and {j["status"] for j in jobs} == {"done"}
    assert len(_rows(tmp_path, "select * from results")) == 4  # no duplicates
    for job in jobs:  # results measured before the kill are untouched
        if job["key"] in before:
            assert job == before[job["key"]] | {"status": "done"}
    attempts = _rows(tmp_path, "select j.key, a.attempt, a.status, a.failure, a.error from "
                               "attempts a join jobs j on j.id = a.job_id order by a.id")
    crashed = [a for a in attempts if a["key"] == running]
    assert [(a["status"], a["failure"]) for a in crashed] == [("failed", "infra"), ("done", None)]
    assert "controller running this job" in crashed[0]["error"]
    assert all(a["status"] == "done" for a in attempts if a["key"] in before)
    assert len([a for a in attempts if a["key"] in before]) == len(before)
    runs = _rows(tmp_path, "select outcome from runs order by id")
    assert [r["outcome"] for r in runs] == ["died", "finished"]


def test_an_agent_killed_from_outside_is_retried_elsewhere_and_a_flaky_device_quarantined(
        cgroups, tmp_path, device_names):
    flaky, steady = device_names(2)
    _setup(tmp_path, [flaky, steady], {"name": "flaky", "models": ["bert-tiny", "bert-mini"],
                                       "batch_sizes": [1, 2, 4], "seq_lens": [32],
                                       "measure": {"warmup": 1, "min_iters": 3,
                                                   "min_seconds": 2.0}})
    farm = _start("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path)
    killed = []
    try:
        for _ in range(2):  # two infrastructure failures in a row on one device
            job = _wait_for(lambda: [r for r in _timing(tmp_path, flaky)
                                     if r["key"] not in killed], process=farm)[0]
            pids = _wait_for(lambda: _agent_pids(flaky))
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.append(job["key"])
        stdout, stderr = farm.communicate(timeout=300)
    finally:
        _stop_group(farm)
    assert farm.returncode == 0, stdout + stderr
    assert f"device {flaky} quarantined" in stdout
    jobs = _rows(tmp_path, "select * from jobs")
    assert len(jobs) == 6 and {j["status"] for j in jobs} == {"done"}
    for key in killed:
        attempts = _rows(tmp_path, "select a.* from attempts a join jobs j on j.id = a.job_id "
                                   "where j.key = ? order by a.attempt", key)
        assert [(a["device"], a["status"], a["failure"]) for a in attempts] == [
            (flaky, "failed", "infra"), (steady, "done", None)]
        assert "killed by SIGKILL from outside farm" in attempts[0]["error"]
    device = _rows(tmp_path, "select * from devices where name = ?", flaky)[0]
    assert device["state"] == "quarantined" and "2 infrastructure failures" in \
        device["quarantine_reason"]
    listed = _farm("devices", "-i", "inventory.yaml", cwd=tmp_path)
    assert "quarantined" in listed.stdout
    released = _farm("devices", "release", flaky, "-i", "inventory.yaml", cwd=tmp_path)
    assert released.returncode == 0 and "released" in released.stdout
    assert _rows(tmp_path, "select state from devices where name = ?", flaky)[0]["state"] == "idle"


def test_a_hung_job_times_out_and_the_device_takes_the_next_job_within_seconds(
        cgroups, tmp_path, device_names):
    name, = device_names(1)
    # bert-base at batch 8 x 256 tokens needs minutes for 40 calls on one core; bert-tiny not.
    _setup(tmp_path, [name], {"name": "hang", "models": ["bert-base", "bert-tiny"],
                              "batch_sizes": [8], "seq_lens": [256], "timeout_s": 15,
                              "measure": {"warmup": 0, "min_iters": 40, "min_seconds": 0}})
    done = _farm("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr  # a job ended timeout
    jobs = {j["model"]: j for j in _rows(tmp_path, "select * from jobs")}
    assert jobs["bert-base"]["status"] == "timeout" and jobs["bert-tiny"]["status"] == "done"
    assert jobs["bert-base"]["failure"] == "job"
    attempts = {a["model"]: a for a in _rows(
        tmp_path, "select j.model, a.* from attempts a join jobs j on j.id = a.job_id")}
    gap = _seconds(attempts["bert-tiny"]["started_at"]) - _seconds(
        attempts["bert-base"]["finished_at"])
    assert 0 <= gap < 10, f"the next job started {gap:.1f} s after the timeout"
    assert not _agent_pids(name)


def _seconds(stamp: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(stamp).timestamp()


def test_cancel_from_another_terminal_and_a_second_submit_is_refused(
        cgroups, tmp_path, device_names):
    """While a sweep runs: the same sweep or its device cannot be taken by a second submit,
    readers never meet a locked database, and `farm cancel` stops it keeping what is done."""
    slow, quick = device_names(2)
    _setup(tmp_path, [slow, quick], {"name": "busy", "models": ["bert-base", "bert-tiny"],
                                     "batch_sizes": [8], "seq_lens": [256],
                                     "measure": {"warmup": 0, "min_iters": 40,
                                                 "min_seconds": 0}})
    farm = _start("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path)
    try:
        _wait_for(lambda: _rows(tmp_path, "select 1 from jobs where status = 'done'")
                  and _timing(tmp_path), process=farm)
        twice = _farm("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path)
        assert twice.returncode == 5 and "is already being run by farm" in twice.stderr
        (tmp_path / "other.yaml").write_text(json.dumps(
            {"name": "other", "devices": [slow], "models": ["bert-tiny"]}))
        other = _farm("submit", "other.yaml", "-i", "inventory.yaml", cwd=tmp_path)
        assert other.returncode == 5 and f"device '{slow}' is in use by sweep 'busy'" in \
            other.stderr
        assert not _rows(tmp_path, "select * from sweeps where name = 'other'")
        for _ in range(5):
            read = _farm("sql", "select count(*) from v_results", cwd=tmp_path)
            assert read.returncode == 0 and "locked" not in read.stderr
        assert _farm("status", "--once", cwd=tmp_path).returncode == 0

        cancelled = _farm("cancel", "busy", cwd=tmp_path)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "1 cancelled" in cancelled.stdout and "1 done" in cancelled.stdout
        stdout, stderr = farm.communicate(timeout=60)
    finally:
        _stop_group(farm)
    assert farm.returncode == 130 and "farm cancel was run" in stdout
    statuses = {j["model"]: j["status"] for j in _rows(tmp_path, "select * from jobs")}
    assert statuses == {"bert-base": "cancelled", "bert-tiny": "done"}
    assert not _agent_pids(slow)


def test_resume_finishes_an_interrupted_sweep_from_the_database(cgroups, tmp_path, device_names):
    name, = device_names(1)
    _setup(tmp_path, [name], {"name": "later", "models": ["bert-tiny"], "batch_sizes": [1, 2, 4],
                              "seq_lens": [32],
                              "measure": {"warmup": 1, "min_iters": 3, "min_seconds": 1.5}})
    farm = _start("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path)
    try:
        _wait_for(lambda: _rows(tmp_path, "select 1 from jobs where status = 'done'")
                  and _timing(tmp_path), process=farm)
        farm.send_signal(signal.SIGINT)
        farm.communicate(timeout=60)
    finally:
        _stop_group(farm)
    first = {j["key"]: j for j in _rows(tmp_path, "select * from jobs where status = 'done'")}
    (tmp_path / "sweep.yaml").unlink()  # resume needs only the database
    resumed = _farm("resume", "later", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    jobs = _rows(tmp_path, "select * from jobs")
    assert {j["status"] for j in jobs} == {"done"} and len(jobs) == 3
    for job in jobs:
        if job["key"] in first:
            assert job["finished_at"] == first[job["key"]]["finished_at"]
    missing = _farm("resume", "nothing", cwd=tmp_path)
    assert missing.returncode == 2 and "no sweep named 'nothing'" in missing.stderr
