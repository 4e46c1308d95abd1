"""`farm status`: its view at a terminal's width (figures whole at 80 columns, many devices a
line per pool and state, power columns only with readings), the pace of a sweep's run, its
JSON; in a real terminal (tmux) beside a running sweep; and `farm sql`'s read-only guarantee,
through the real `farm` command."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import update
from typer.testing import CliRunner

from conftest import QUICK
from farm.api import status_snapshot
from farm.cli import app
from farm.status_view import StatusView as status_view
from farm.inventory import Inventory
from farm.store import Store
from farm.store.clock import utcnow
from farm.store.schema import Run
from farm.sweep import Sweep, expand, resolve_targets

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
    records = json.loads((Path(db).parent / "once.json").read_text())
    assert len(records) == 2 and all(len(r["latencies_ms"]) == r["iters"] for r in records)


# --- The view at a terminal's width, from a real store --------------------------------------

OOM = "killed by the kernel's OOM killer at the 2048 MiB limit (peak 2101 MiB)"
HUNG = ("timeout: no event from the agent for 600 s while measuring; the board stopped "
        "answering pings at 12:04:31 UTC and came back after a power cycle")


def _sweep(store: Store, name: str, pools: dict[str, list[str]], **spec) -> list:
    """A sweep over these pools (tag -> device names, local devices), stored as a submit
    stores it; its jobs, queued."""
    inventory = Inventory.model_validate({"devices": [
        {"name": device, "kind": "local", "cpus": 1, "tags": [tag]}
        for tag, devices in pools.items() for device in devices]})
    sweep = Sweep.model_validate({"name": name, "devices": list(pools), "seq_lens": [128],
                                  "measure": QUICK, **spec}, context={"base_dir": "/"})
    jobs = expand(sweep, list(resolve_targets(sweep, inventory, "sweep.yaml", "inventory.yaml")))
    submitted = store.add_sweep(sweep, f"/sweeps/{name}.yaml", inventory, jobs)
    return store.runnable_jobs(submitted.id, {j.key for j in jobs})


def _run(store: Store, sweep: str, devices: list[str], minutes_ago: float) -> float:
    """A run of the sweep holding these devices, started that long ago; its start (epoch)."""
    store.begin_run(sweep, dict.fromkeys(devices, "local"))
    started = utcnow() - timedelta(minutes=minutes_ago)
    with store._write() as db:
        db.execute(update(Run).where(Run.id == store.run_id).values(started_at=started))
    return started.replace(tzinfo=timezone.utc).timestamp()


def _finish(store: Store, job, device: str, at: float, status: str = "done",
            error: str | None = None, **figures) -> None:
    """A job run on `device`, ended at `at` (epoch) with these figures."""
    store.job_started(job.id, device)
    store.job_finished(job.id, {"status": status, "device": device, "started_at": at - 30,
                                "finished_at": at, "error": error,
                                "failure": None if status == "done" else "job",
                                "result": figures})


def _busy(store: Store, job, device: str, phase: str = "measure") -> None:
    store.job_started(job.id, device)
    store.job_phase(job.id, phase)
    store.device_state(device, "local", "busy", job_id=job.id)


def _text(snapshot: dict, width: int) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(status_view(snapshot))
    return console.export_text()


NANOS = [f"nano-emu-{i:02d}" for i in range(1, 4)]


@pytest.fixture
def fleet(tmp_path):
    """A sweep under way on four devices (three busy, one in error), its figures wide, beside
    an earlier one that ended with oom, a timeout and cancelled jobs."""
    store = Store(str(tmp_path / "farm.db"))
    now = time.time()
    old = _sweep(store, "glue-baseline-fp32", {"nano-2gb": NANOS}, models=["bert-large"],
                 batch_sizes=[1, 8, 32, 64])
    _finish(store, old[0], NANOS[0], now - 7200, "oom", OOM, peak_mem_mb=2101.0)
    _finish(store, old[1], NANOS[1], now - 7100, "timeout", HUNG)
    _finish(store, old[2], NANOS[2], now - 7000, per_sample_ms=4321.09, p50_ms=8642.18,
            peak_mem_mb=1987.0, energy_mj=98765.4)
    store.cancel_queued(store.sweep_id("glue-baseline-fp32"), "cancelled by `farm cancel`")
    jobs = _sweep(store, "glue-nano-int8-long-name", {"nano-2gb": NANOS, "orin": ["orin-agx-01"]},
                  models=["bert-base", "bert-mini"], variants=["fp32", "int8"],
                  batch_sizes=[1, 8, 32])
    started = _run(store, "glue-nano-int8-long-name", [*NANOS, "orin-agx-01"], minutes_ago=20)
    for i, job in enumerate(jobs[:10]):
        _finish(store, job, NANOS[i % 3], started + 60 * (i + 1), per_sample_ms=123.45 + i,
                p50_ms=1234.56 + i, peak_mem_mb=1873.0 + i, energy_mj=5678.91 + i)
    for job, device in zip(jobs[10:13], NANOS):
        _busy(store, job, device)
    store.device_state("orin-agx-01", "local", "error", error=HUNG)
    yield store
    store.close()


def _figures(r: dict) -> list[str]:
    return [f"{r['per_sample_ms']:.2f}" if r["per_sample_ms"] else "", f"{r['peak_mem_mb']:.0f}"]


def test_at_80_columns_every_figure_and_name_is_whole(fleet):
    snapshot = status_snapshot(fleet.url)
    text = _text(snapshot, 80)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80, text
    assert not re.search(r"\d…|…\d", text), text  # no figure cut short
    latest = text[text.index("latest results"):text.index("failed jobs")]
    for r in snapshot["latest"]:
        job = f"{r['model']} {r['variant']} {r['task']} b{r['batch_size']} s{r['seq_len']}"
        line = next(line for line in latest.splitlines() if f"{r['device']}  {job} " in line)
        assert all(figure in line for figure in _figures(r)), (r, line)
    for name in [*NANOS, "orin-agx-01"]:
        assert re.search(rf"(^|\s){name}(\s|$)", text, re.M), name
    running = next(s for s in snapshot["sweeps"] if s["state"] == "running")
    sweep_line = next(line for line in text.splitlines() if "running" in line)
    assert "10/24" in sweep_line and f"{running['rate_per_min']:.1f}" in sweep_line
    assert re.search(r"\b28 min\b", sweep_line), sweep_line  # 14 left at 10 in 20 min
    busy = [line for line in text.splitlines() if " busy " in line]
    assert len(busy) == 3, busy  # each busy device's job on its one line, whole
    assert all(re.search(r"bert-\w+ (fp32|int8) synthetic b\d+ s128 ", line) for line in busy)


def test_wider_terminals_get_the_columns_80_leaves_out(fleet):
    snapshot = status_snapshot(fleet.url)
    narrow, wide = _text(snapshot, 80), _text(snapshot, 160)
    assert max(len(line.rstrip()) for line in wide.splitlines()) <= 160
    for heading in ("mJ/sample", "p50 ms", "progress", "phase", "pool"):
        assert heading not in narrow and heading in wide, heading
    assert "5687.91" in wide and "1243.56" in wide  # the newest result's energy and p50
    assert "ms/sample" in narrow and "peak MiB" in narrow


def test_board_power_columns_only_once_a_device_has_a_reading(fleet):
    without = _text(status_snapshot(fleet.url), 160)
    assert "board W" not in without and "board RAM" not in without and "temp" not in without
    (job,) = _sweep(fleet, "on-a-board", {"orin": ["orin-agx-01"]}, models=["bert-tiny"])
    _finish(fleet, job, "orin-agx-01", time.time(), per_sample_ms=3.0, peak_mem_mb=300.0,
            avg_power_mw=4321.0, board_ram_peak_mb=1234.0, temp_c_end=45.5)
    board = next(line for line in _text(status_snapshot(fleet.url), 160).splitlines()
                 if line.startswith("orin-agx-01 "))
    assert "4.32" in board and "1234 MiB" in board and "45.5 °C" in board, board


def test_many_devices_are_a_line_per_pool_and_state(tmp_path):
    store = Store(str(tmp_path / "farm.db"))
    nanos, orins = [f"nano-{i:02d}" for i in range(1, 41)], [f"orin-{i:02d}" for i in range(1, 25)]
    jobs = _sweep(store, "wide", {"nano-2gb": nanos, "orin": orins},
                  models=["bert-tiny", "bert-mini"], batch_sizes=[1, 2, 4, 8, 16, 32])
    nano_jobs = [j for j in jobs if j.target == "nano-2gb"]
    for i, name in enumerate(nanos):
        if i < 12:
            _busy(store, nano_jobs[i], name)
        else:
            store.device_state(name, "local", "quarantined" if i >= 38 else "idle",
                               error="3 infra failures in a row" if i >= 38 else None)
    for name in orins:
        store.device_state(name, "local", "offline" if name == "orin-24" else "idle")
    snapshot = status_snapshot(store.url)
    store.close()
    assert len(snapshot["devices"]) == 64
    text = _text(snapshot, 80)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80, text
    devices = text[text.index("devices (64"):text.index("latest results")]
    lines = {tuple(line.split()[:3]): line for line in devices.splitlines()[3:]
             if line[:1].strip()}  # a group's first line; its others are indented
    assert set(lines) == {("nano-2gb", "busy", "12"), ("nano-2gb", "idle", "26"),
                          ("nano-2gb", "quarantined", "2"), ("orin", "idle", "23"),
                          ("orin", "offline", "1")}, devices
    assert "nano-[01-12]" in lines["nano-2gb", "busy", "12"]
    assert "bert-tiny fp32 synthetic b1 s128" in devices and "+10 more" in devices  # their jobs
    assert "nano-[13-38]" in lines["nano-2gb", "idle", "26"]
    assert "nano-[39-40]" in lines["nano-2gb", "quarantined", "2"]
    assert "3 infra failures in a row ×2" in lines["nano-2gb", "quarantined", "2"]
    assert "orin-[01-23]" in lines["orin", "idle", "23"] and "orin-24" in devices


def test_pace_and_eta_are_of_the_live_runs_own_finished_jobs(tmp_path):
    store = Store(str(tmp_path / "farm.db"))
    jobs = _sweep(store, "paced", {"nano-2gb": NANOS}, models=["bert-tiny", "bert-mini"],
                  batch_sizes=[1, 2, 4, 8, 16, 32])
    earlier = _run(store, "paced", NANOS, minutes_ago=180)
    for i, job in enumerate(jobs[:3]):  # an earlier run's, fast: not this run's pace
        _finish(store, job, NANOS[0], earlier + 10 * (i + 1))
    store.end_run("interrupted")

    started = _run(store, "paced", NANOS, minutes_ago=25)
    _finish(store, jobs[3], NANOS[0], started + 60)
    (sweep,) = status_snapshot(store.url)["sweeps"]
    assert sweep["state"] == "running" and sweep["finished_in_run"] == 1
    assert sweep["rate_per_min"] is None and sweep["eta_s"] is None  # one finish: no guess
    line = next(line for line in _text(status_snapshot(store.url), 80).splitlines()
                if line.startswith("paced "))
    assert re.search(r" 4/12 .* — +— ", line), line  # neither rate nor ETA

    for minute, job in zip((2, 3, 4, 20), jobs[4:8]):
        _finish(store, job, NANOS[1], started + 60 * minute)
    _busy(store, jobs[8], NANOS[2])
    (sweep,) = status_snapshot(store.url)["sweeps"]
    store.close()
    assert sweep["finished_in_run"] == 5 and sweep["running"] == 1 and sweep["queued"] == 3
    assert sweep["rate_per_min"] == pytest.approx(5 / 25, rel=0.01)  # 5 in its 25 minutes
    assert sweep["eta_s"] == pytest.approx(4 / 0.2 * 60, rel=0.01)  # 4 left at 0.2 a minute
    line = next(line for line in _text(status_snapshot(store.url), 80).splitlines()
                if line.startswith("paced "))
    assert re.search(r" 8/12 .* 0\.2 +20 min ", line), line


def test_status_json_holds_the_snapshot_for_scripts(fleet):
    done = CliRunner().invoke(app, ["status", "--json", "--db", fleet.url])
    assert done.exit_code == 0, done.output
    document = json.loads(done.stdout)
    assert list(document) == ["now", "sweeps", "devices", "latest", "failures"]
    sweeps = {s["name"]: s for s in document["sweeps"]}
    running = sweeps["glue-nano-int8-long-name"]
    assert {k: running[k] for k in ("state", "total", "done", "running", "queued")} == {
        "state": "running", "total": 24, "done": 10, "running": 3, "queued": 11}
    assert running["rate_per_min"] == pytest.approx(0.5, rel=0.01)
    assert running["eta_s"] == pytest.approx(28 * 60, rel=0.01)
    assert {k: sweeps["glue-baseline-fp32"][k] for k in ("oom", "failed", "cancelled")} == {
        "oom": 1, "failed": 1, "cancelled": 1}
    devices = {d["name"]: d for d in document["devices"]}
    assert devices["orin-agx-01"]["pool"] == "orin" and devices["orin-agx-01"]["state"] == "error"
    assert devices["nano-emu-01"]["model"] == "bert-mini" and len(document["latest"]) == 8
    assert [f["status"] for f in document["failures"]] == ["timeout"]
    assert "--json" in CliRunner().invoke(app, ["status", "--help"]).stdout


def test_the_sweeps_shown_are_those_touched_in_the_last_day_newest_first(tmp_path):
    """recent_sweeps counts the jobs of the sweeps it may show only (farm.store.queries); held
    here to what the sweeps say, worked out in Python: up to 6, newest first, each running, or
    updated or with a job finished within the day."""
    import contextlib

    from farm.store import queries
    from farm.store.readonly import ReadOnly

    store = Store(str(tmp_path / "farm.db"))
    names = [f"s{i}" for i in range(10)]
    jobs = {name: _sweep(store, name, {"nano-2gb": NANOS}, models=["bert-tiny"],
                         batch_sizes=[1, 2]) for name in names}
    now = time.time()
    _busy(store, jobs["s7"][0], NANOS[0])  # running, though not updated for days
    _finish(store, jobs["s8"][0], NANOS[1], now - 3600)  # a job finished an hour ago
    _finish(store, jobs["s9"][0], NANOS[2], now - 3 * 86400)  # nothing for three days
    store.close()

    def touched(fresh: int) -> list[str]:
        """Sweeps s0.. s{fresh - 1} updated within the day (s0 the newest), the rest days ago."""
        with sqlite3.connect(tmp_path / "farm.db") as db:
            for i, name in enumerate(names):
                days = i / 100 if i < fresh else 3 + i
                db.execute("UPDATE sweeps SET updated_at = datetime('now', ?) WHERE name = ?",
                           (f"-{days} days", name))
        with contextlib.closing(ReadOnly(str(tmp_path / "farm.db"))) as reader:
            now_db = queries.database_now(reader)
            shown = queries.recent_sweeps(reader, now_db, 24)
        assert all(s["total"] == 2 for s in shown)
        assert {s["name"]: s["running"] for s in shown}.get("s7", 1) == 1
        return [s["name"] for s in shown]

    assert touched(8) == ["s0", "s1", "s2", "s3", "s4", "s5"]  # the newest six
    assert touched(2) == ["s0", "s1", "s7", "s8"]  # then the running and the finished, by date
