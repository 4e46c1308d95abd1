"""`farm submit` end to end on a real cgroup v2 kernel, with real Ray: done jobs with their
container peaks, a model that cannot fit ending oom (not timeout), a slow job ending timeout
(not oom), a cancelled sweep, and a run as a user that is not root in a delegated subtree."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

FARM = str(Path(sys.executable).parent / "farm")
CGROUP_ROOT = Path("/sys/fs/cgroup")
QUICK = {"warmup": 1, "min_iters": 3, "min_seconds": 0.2}
USER = 1000


def _files(folder: Path, devices: list[dict], sweep: dict) -> None:
    (folder / "inventory.yaml").write_text(yaml.safe_dump({"devices": devices}))
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep))


def _device(name, memory="512MiB", cpus=1):
    return {"name": name, "kind": "cgroup", "memory": memory, "cpus": cpus, "tags": ["v2"]}


def _rows(folder: Path, sql: str = "select * from v_results order by job_key") -> list[dict]:
    with sqlite3.connect(folder / "farm.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql)]


def _submit(folder: Path, *prefix: str, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, FARM, "submit", "sweep.yaml", "-i", "inventory.yaml",
                           "--db", "farm.db"], cwd=folder, capture_output=True, text=True,
                          timeout=timeout)


def test_done_jobs_have_peaks_and_a_model_that_cannot_fit_ends_oom(cgroups, tmp_path,
                                                                    device_names):
    name, = device_names(1)
    _files(tmp_path, [_device(name)], {
        "name": "fit", "devices": ["v2"], "models": ["bert-tiny", "bert-large"],
        "variants": ["fp32"], "batch_sizes": [32, 1], "seq_lens": [64], "measure": QUICK,
        "timeout_s": 300})
    started = time.monotonic()
    done = _submit(tmp_path)
    print(f"sweep took {time.monotonic() - started:.0f} s")
    assert done.returncode in (0, 1), done.stderr
    rows = {(r["model"], r["batch_size"]): r for r in _rows(tmp_path)}
    for batch in (32, 1):
        tiny = rows["bert-tiny", batch]
        assert tiny["status"] == "done", tiny["error"]
        assert tiny["container_peak_mb"] is not None
        assert tiny["container_peak_method"] in ("reset", "fresh", "sampled")
        assert tiny["peak_mem_mb"] == tiny["container_peak_mb"]
        assert tiny["load_container_peak_mb"] is not None
        assert tiny["load_container_peak_method"] in ("reset", "fresh")
        # The job's own memory, and what its cgroup holds of each kind (memory.stat).
        assert tiny["memory_mb"] == tiny["process_peak_mb"] > 0
        assert tiny["anon_mb"] > 0 and tiny["kernel_mb"] > 0 and tiny["file_mb"] >= 0
        assert tiny["headroom_mb"] == tiny["memory_limit_mb"] - tiny["memory_mb"]
        # UML is uniprocessor, and cpusets need SMP: the device runs unpinned, and says so.
        env, = _rows(tmp_path, "select r.env_json from results r join jobs j on j.id = r.job_id "
                               f"where j.key = '{tiny['job_key']}'")
        assert json.loads(env["env_json"])["cores"] is None and tiny["cpu_list"] == "0"
        assert tiny["outside_cpu_share"] is not None and tiny["noise"] is not None
        print("bert-tiny", batch, tiny["container_peak_mb"], tiny["container_peak_method"],
              "load", tiny["load_container_peak_mb"], tiny["load_container_peak_method"])
    # One agent ran both (batch 32 first): batch 1's peak is its own, not batch 32's.
    assert rows["bert-tiny", 1]["load_id"] == rows["bert-tiny", 32]["load_id"]
    assert rows["bert-tiny", 1]["container_peak_mb"] < rows["bert-tiny", 32]["container_peak_mb"]
    for batch in (32, 1):
        large = rows["bert-large", batch]
        assert large["status"] == "oom", (large["status"], large["error"])
        assert large["memory_limit_mb"] == 512
        assert large["container_peak_mb"] >= 500
        assert "512 MiB limit" in large["error"]
        started_at, finished_at = (_seconds(large[k]) for k in ("started_at", "finished_at"))
        print("bert-large", batch, f"{finished_at - started_at:.1f} s:", large["error"])
        assert finished_at - started_at < 120  # seconds, never the 300 s timeout
    assert not (CGROUP_ROOT / "farm" / name).exists()


def _seconds(stamp: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(stamp).timestamp()


def test_a_slow_job_is_timeout_not_oom(cgroups, tmp_path, device_names):
    name, = device_names(1)
    _files(tmp_path, [_device(name, memory="1GiB")], {
        "name": "slow", "devices": ["v2"], "models": ["bert-mini"], "batch_sizes": [1],
        "seq_lens": [32], "measure": QUICK, "timeout_s": 4})
    done = _submit(tmp_path)
    assert done.returncode == 1, done.stderr
    row, = _rows(tmp_path)
    assert row["status"] == "timeout", row["error"]
    assert row["error"].startswith("no result within timeout_s=4")


def test_cancel_stops_the_agent_and_empties_its_cgroup(cgroups, tmp_path, device_names):
    name, = device_names(1)
    _files(tmp_path, [_device(name, memory="1GiB")], {
        "name": "busy", "devices": ["v2"], "models": ["bert-mini"], "batch_sizes": [1],
        "seq_lens": [32], "measure": {"warmup": 0, "min_iters": 100000, "min_seconds": 600},
        "timeout_s": 900})
    farm = subprocess.Popen([FARM, "submit", "sweep.yaml", "-i", "inventory.yaml", "--db",
                             "farm.db"], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not _timing(tmp_path):
            assert farm.poll() is None, farm.communicate()
            assert time.monotonic() < deadline, "the job never started timing"
            time.sleep(0.5)
        agents = _pids_below(CGROUP_ROOT / "farm" / name)
        assert agents
        cancelled = subprocess.run([FARM, "cancel", "busy", "--db", "farm.db"], cwd=tmp_path,
                                   capture_output=True, text=True, timeout=120)
        assert cancelled.returncode == 0, cancelled.stderr
        stdout, _ = farm.communicate(timeout=120)
    finally:
        try:
            os.killpg(farm.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        farm.wait()
    assert farm.returncode == 130 and "farm cancel was run" in stdout
    assert [r["status"] for r in _rows(tmp_path, "select status from jobs")] == ["cancelled"]
    assert not any(Path(f"/proc/{pid}").exists() for pid in agents)
    assert not (CGROUP_ROOT / "farm" / name).exists()


def _timing(folder: Path) -> bool:
    try:
        return bool(_rows(folder, "select 1 from jobs where phase = 'timing'"))
    except sqlite3.Error:
        return False


def _pids_below(cgroup: Path) -> list[int]:
    return [int(p) for procs in cgroup.rglob("cgroup.procs") for p in procs.read_text().split()]


@pytest.fixture
def user_folder():
    """A folder of the user's own (pytest's tmp_path is root's alone) with a home in it."""
    folder = Path(tempfile.mkdtemp(prefix="fu-", dir="/tmp"))
    (folder / "home").mkdir()
    for path in (folder, folder / "home"):
        path.chmod(0o755)
        os.chown(path, USER, USER)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def delegated(cgroups):
    """A subtree chowned to the user, as an administrator delegates one (cgroups(7))."""
    subtree = CGROUP_ROOT / f"farm-user-{uuid.uuid4().hex[:6]}"
    (CGROUP_ROOT / "cgroup.subtree_control").write_text("+memory +cpu")
    subtree.mkdir()
    for path in (subtree, *(subtree / f for f in ("cgroup.procs", "cgroup.subtree_control",
                                                  "cgroup.threads"))):
        os.chown(path, USER, USER)
    yield subtree
    for cgroup in sorted((p for p in subtree.rglob("*") if p.is_dir()), reverse=True):
        for pid in (cgroup / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        _rmdir(cgroup)
    _rmdir(subtree)


def _rmdir(cgroup: Path) -> None:
    for _ in range(50):
        try:
            cgroup.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def _as_user(subtree: Path | None, home: Path) -> list[str]:
    """A shell that joins `subtree` as root (as systemd puts a delegated scope's processes
    there), then becomes the user, with no capabilities, and runs the rest."""
    join = f'echo $$ > "{subtree}/cgroup.procs" && ' if subtree else ""
    return ["/bin/sh", "-c", f'{join}exec setpriv --reuid={USER} --regid={USER} '
            f'--clear-groups --inh-caps=-all env HOME="{home}" RAY_TMPDIR="{home}/ray" "$@"',
            "as-user"]


def test_a_user_that_is_not_root_runs_a_sweep_in_a_delegated_subtree(delegated, user_folder,
                                                                      device_names):
    name, tmp_path = device_names(1)[0], user_folder
    _files(tmp_path, [_device(name, memory="1GiB")], {
        "name": "mine", "devices": ["v2"], "models": ["bert-tiny"], "batch_sizes": [1, 4],
        "seq_lens": [32], "measure": QUICK})
    for f in ("inventory.yaml", "sweep.yaml"):
        os.chown(tmp_path / f, USER, USER)
    home = tmp_path / "home"

    refused = _submit(tmp_path, *_as_user(None, home), timeout=300)  # not delegated: told how
    assert refused.returncode == 3, refused.stderr
    assert "is not delegated to this user" in refused.stderr
    assert "systemd-run --user --scope -p Delegate=yes" in refused.stderr
    shutil.rmtree(home / "ray", ignore_errors=True)

    done = _submit(tmp_path, *_as_user(delegated, home))
    assert done.returncode == 0, done.stderr
    rows = _rows(tmp_path)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert all(r["container_peak_mb"] and r["memory_limit_mb"] == 1024 for r in rows)
    assert (tmp_path / "farm.db").stat().st_uid == USER
    # farm moved itself into a leaf so that the subtree could hold its device cgroups
    assert (delegated / "farm-controller").is_dir()
    assert not (delegated / "farm" / name).exists()  # and removed them when done
