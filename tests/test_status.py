"""`farm status` in a real terminal (tmux) beside a running sweep, and `farm sql`'s read-only
guarantee, through the real `farm` command."""
from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import QUICK

FARM = str(Path(sys.executable).parent / "farm")


def _farm(*args, timeout=120):
    return subprocess.run([FARM, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tmux():
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have tmux (apt-get install tmux)")
        pytest.skip("tmux is not installed")
    session = f"farm-status-{uuid.uuid4().hex[:6]}"

    def capture() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                              capture_output=True, text=True).stdout

    def start(command: str) -> None:
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "70",
                        command], check=True)

    yield start, capture
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def _progress(screen: str, sweep: str) -> int | None:
    match = re.search(rf"{sweep}\s.*?(\d+)/(\d+)", screen)
    return int(match.group(1)) if match else None


def test_live_view_follows_a_sweep_in_another_terminal(cgroups, tmux, write_yaml, db_url,
                                                       device_names):
    start, capture = tmux
    small, tight = device_names(2)
    inventory = write_yaml("inventory.yaml", {"devices": [
        {"name": small, "kind": "cgroup", "memory": "1GiB", "cpus": 1},
        {"name": tight, "kind": "cgroup", "memory": "512MiB", "cpus": 1}]})
    sweep = write_yaml("sweep.yaml", {
        "name": "watched", "models": ["bert-tiny", "bert-mini"], "batch_sizes": [1, 2, 4],
        "seq_lens": [32], "measure": dict(QUICK, min_seconds=1.5)})
    oom_sweep = write_yaml("oom.yaml", {
        "name": "watched-oom", "devices": [tight], "models": ["bert-large"], "seq_lens": [32],
        "measure": QUICK})
    db = db_url.removeprefix("sqlite:///")
    assert _farm("submit", str(oom_sweep), "-i", str(inventory), "--db", db).returncode == 0

    submit = subprocess.Popen([FARM, "submit", str(sweep), "-i", str(inventory), "--db", db],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The pane is 200 columns wide; a COLUMNS inherited from the test run must not say less.
        start(f"env -u COLUMNS -u LINES {FARM} status --db {db} --interval 0.3")
        seen_busy, progress, screen = set(), [], ""
        deadline = time.monotonic() + 180
        while submit.poll() is None and time.monotonic() < deadline:
            screen = capture()
            for line in screen.splitlines():
                for name in (small, tight):
                    if line.lstrip("│┃ ").startswith(name) and " busy " in line \
                            and re.search(r"bert-(tiny|mini) fp32", line):
                        seen_busy.add(name)
            value = _progress(screen, "watched ")
            if value is not None and (not progress or value != progress[-1]):
                progress.append(value)
            time.sleep(0.3)
        assert submit.wait(timeout=60) == 0
    finally:
        if submit.poll() is None:
            submit.kill()
    assert seen_busy == {small, tight}, screen
    assert len(progress) >= 3 and progress == sorted(progress), (progress, screen)  # it moved

    time.sleep(1.5)
    screen = capture()
    assert re.search(r"watched\s+│?\s*finished.*6/6", screen), screen
    assert "killed by the kernel's OOM killer" in screen  # a failure's reason, in its table
    assert "bert-large" in screen and "oom" in screen


def test_status_once_and_read_only_sql(cgroups, write_yaml, db_url, device_names):
    name, = device_names(1)
    inventory = write_yaml("inventory.yaml", {"devices": [
        {"name": name, "kind": "cgroup", "memory": "1GiB", "cpus": 1}]})
    sweep = write_yaml("sweep.yaml", {"name": "once", "models": ["bert-tiny"],
                                      "batch_sizes": [1, 2], "seq_lens": [16], "measure": QUICK})
    db = db_url.removeprefix("sqlite:///")
    assert _farm("submit", str(sweep), "-i", str(inventory), "--db", db).returncode == 0

    once = _farm("status", "--once", "--db", db)
    assert once.returncode == 0 and "once" in once.stdout and "finished" in once.stdout
    assert name in once.stdout and "2/2" in once.stdout

    with sqlite3.connect(db) as connection:
        before = connection.execute("select count(*) from jobs").fetchone()[0]
    for statement in ("delete from jobs", "update jobs set status = 'queued'",
                      "drop view v_results", "insert into sweeps (name) values ('x')"):
        refused = _farm("sql", statement, "--db", db)
        assert refused.returncode == 2 and "read-only" in refused.stderr, refused.stderr
    with sqlite3.connect(db) as connection:
        assert connection.execute("select count(*) from jobs").fetchone()[0] == before == 2
        assert connection.execute("select count(*) from jobs where status = 'done'"
                                  ).fetchone()[0] == 2

    as_csv = _farm("sql", "select model, batch_size from v_results order by 2", "--csv",
                   "--db", db)
    assert as_csv.stdout.splitlines() == ["model,batch_size", "bert-tiny,1", "bert-tiny,2"]
    latest = _farm("sql", "select device, done, failed from v_devices", "--json", "--db", db)
    assert f'"device": "{name}"' in latest.stdout and '"done": 2' in latest.stdout
    missing = _farm("sql", "select 1", "--db", str(Path(db).with_name("none.db")))
    assert missing.returncode == 4 and "no database" in missing.stderr
    table = _farm("table", "once", "-f", "markdown", "--db", db)
    assert table.returncode == 0 and "| bert-tiny | fp32 |" in table.stdout
    assert "synthetic" in table.stdout
    report_dir = Path(db).parent / "report"
    report = _farm("report", "once", "--out", str(report_dir), "--db", db)
    assert report.returncode == 0, report.stderr
    pngs = sorted(report_dir.glob("*.png"))
    assert [p.name for p in pngs] == ["pool-all-front-latency-memory.png",
                                      "pool-all-latency-batch.png", "pool-all-memory.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    page = (report_dir / "index.html").read_text()
    assert all(p.name in page for p in pngs) and "bert-tiny" in page
    exported = _farm("export", "once", "-f", "json", "-o", str(Path(db).parent / "once.json"),
                     "--db", db)
    assert exported.returncode == 0
    import json
    records = json.loads((Path(db).parent / "once.json").read_text())
    assert len(records) == 2 and all(len(r["latencies_ms"]) == r["iters"] for r in records)
