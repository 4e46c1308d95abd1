"""What a submit reports at its end, whose jobs a sweep's name holds, and `farm status`'s view of
results and failures: the store and the summary on a real SQLite, and one real submit (Ray, a
local device, bert-tiny) for what only a run can show."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from conftest import QUICK, farm_cli
from farm import api, console, store as stores
from farm.api import SubmitReport, status_snapshot, submit
from farm.status_view import StatusView as status_view
from farm.controller import Observer
from farm.errors import Busy, ConfigError, QueryError
from farm.inventory import load_inventory
from farm.store import Store
from farm.sweep import expand, load_sweep, read_data, resolve_targets

OOM_ERROR = "killed by the kernel's OOM killer at the 512 MiB limit (peak 530 MiB)"


def _inventory(write_yaml) -> Path:
    return write_yaml("inventory.yaml", {"devices": [{"name": "box", "kind": "local", "cpus": 1}]})


def _sweep_file(folder: Path, name: str = "s", batch_sizes=(1,), **more) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.yaml"
    import yaml
    path.write_text(yaml.safe_dump({"name": name, "models": ["bert-tiny"], "seq_lens": [16],
                                    "batch_sizes": list(batch_sizes), "measure": QUICK, **more}))
    return path


def _record(db_url, sweep_file: Path, inventory: Path, outcomes: dict[int, str],
            source: str | None = None) -> Store:
    """Store a sweep file's jobs as a submit would (same keys), each batch size ended with the
    status given (a batch size not given stays queued), without running anything."""
    sweep, devices = load_sweep(sweep_file), load_inventory(inventory)
    pools = resolve_targets(sweep, devices, str(sweep_file), str(inventory))
    jobs = expand(sweep, list(pools), read_data(sweep))
    store = Store(db_url)
    submitted = store.add_sweep(sweep, source or str(sweep_file.resolve()), devices, jobs)
    for job in store.runnable_jobs(submitted.id, {j.key for j in jobs}):
        status = outcomes.get(job.spec["batch_size"])
        if status is not None:
            _end(store, job.id, status)
    return store


def _end(store: Store, job_id: int, status: str) -> None:
    figures = {"done": {"p50_ms": 2.5, "peak_mem_mb": 300.0, "latencies_ms": [2.5],
                        "load": {"load_key": f"load-{job_id}", "model": {"name": "bert-tiny"},
                                 "variant": "fp32"}},
               "oom": {"peak_mem_mb": 530.0, "memory_limit_mb": 512.0}}.get(status, {})
    store.job_started(job_id, "box")
    store.job_finished(job_id, {
        "status": status, "device": "box", "started_at": 1000.0, "finished_at": 1001.0,
        "failure": "job" if status in ("oom", "failed", "timeout") else None,
        "error": OOM_ERROR if status == "oom" else None if status == "done" else "it broke",
        "result": figures})


def _row_counts(db_url) -> dict[str, int]:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        tables = [t for (t,) in db.execute("select name from sqlite_master where type = 'table'")]
        return {t: db.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}


def _text(renderable, width: int = 200) -> str:
    terminal = Console(width=width, record=True, color_system=None)
    terminal.print(renderable)
    return terminal.export_text()


# --- 1. the end-of-run summary: this file's jobs, and the jobs run now ----------------------

def test_the_summary_counts_this_files_jobs_not_the_whole_sweeps(write_yaml, db_url, tmp_path):
    """The file once had batch sizes 1 and 2 (2 failed); now it has only 1, already done: its
    summary is one job, done, run 0 now; not '1 jobs (1 done, 1 failed)'."""
    inventory = _inventory(write_yaml)
    path = _sweep_file(tmp_path / "a", batch_sizes=(1, 2))
    _record(db_url, path, inventory, {1: "done", 2: "failed"}).close()
    path = _sweep_file(tmp_path / "a", batch_sizes=(1,))

    report = submit(path, inventory, db=db_url)  # all done: nothing to run, no Ray
    assert (report.total_jobs, report.ran, report.counts) == (1, 0, {"done": 1})
    assert report.failed == 0 and [r["batch_size"] for r in report.results] == [1]
    assert console.submit_summary(report) == (
        "1 job (1 done, 0 oom, 0 failed, 0 timeout); ran 0 now.")


def test_the_summary_names_every_final_status_and_cancelled_only_when_there_are_some():
    ended = SubmitReport("s", 12, 3, {"done": 1, "oom": 1, "timeout": 1, "cancelled": 9}, [])
    assert console.submit_summary(ended) == (
        "12 jobs (1 done, 1 oom, 0 failed, 1 timeout, 9 cancelled); ran 3 now.")
    whole = SubmitReport("s", 2, 2, {"done": 2}, [])
    assert console.submit_summary(whole) == (
        "2 jobs (2 done, 0 oom, 0 failed, 0 timeout); ran 2 now.")
    stranded = SubmitReport("s", 3, 1, {"done": 1, "queued": 2}, [])
    assert console.submit_summary(stranded) == (
        "3 jobs (1 done, 0 oom, 0 failed, 0 timeout, 2 not run); ran 1 now.")


class _CancelAfterFirst(Observer):
    """Runs `farm cancel` (as another terminal would) once the first job has ended."""

    def __init__(self, db_url: str):
        self.db_url, self.asked = db_url, False

    def job_finished(self, job, outcome: dict) -> None:
        if not self.asked:
            self.asked = True
            from farm.api import cancel
            cancel("s", self.db_url, wait_s=0)


def test_a_cancelled_submit_reports_the_jobs_it_ran_not_the_ones_cancelled(
        write_yaml, db_url, tmp_path):
    """One real run (Ray, a local device): cancelled after its first job, with an earlier
    version of the file's failed job in the sweep. `ran` is what ended now, not the cancelled;
    counts are this file's six jobs, without the earlier failure."""
    inventory = _inventory(write_yaml)
    path = _sweep_file(tmp_path / "a", batch_sizes=(64,))
    _record(db_url, path, inventory, {64: "failed"}).close()
    path = _sweep_file(tmp_path / "a", batch_sizes=(1, 2, 3, 4, 5, 6),
                       measure=dict(QUICK, min_seconds=0.5))

    report = submit(path, inventory, db=db_url, observer=_CancelAfterFirst(db_url))
    assert report.cancelled and report.total_jobs == 6
    assert "failed" not in report.counts and sum(report.counts.values()) == 6
    assert report.counts["cancelled"] >= 1 and report.counts["done"] >= 1
    assert report.ran == report.counts["done"] == 6 - report.counts["cancelled"]
    assert sorted(r["batch_size"] for r in report.results) == [1, 2, 3, 4, 5, 6]
    summary = console.submit_summary(report)
    assert summary.endswith(f"{report.counts['cancelled']} cancelled); ran {report.ran} now.")
    assert summary.startswith(f"6 jobs ({report.ran} done, 0 oom, 0 failed, 0 timeout, ")


# --- 2. a sweep's name belongs to one sweep file ---------------------------------------------

def test_a_name_another_file_used_is_refused_before_anything_is_written(
        write_yaml, db_url, tmp_path):
    inventory = _inventory(write_yaml)
    first = _sweep_file(tmp_path / "first")
    _record(db_url, first, inventory, {1: "done"}).close()
    second = _sweep_file(tmp_path / "second")  # the same jobs, from another file
    second.write_text("# another study, which forgot to change its name\n" + second.read_text())
    before = _row_counts(db_url)

    with pytest.raises(ConfigError) as refused:
        submit(second, inventory, db=db_url)
    error = refused.value
    assert error.exit_code == 2 and error.field == "name" and error.file == str(second)
    assert str(first.resolve()) in error.message and "\n" not in str(error)
    assert "rename it (name: " in error.hint and "`farm sweeps rm s`" in error.hint
    assert _row_counts(db_url) == before
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        assert db.execute("select source from sweeps").fetchall() == [(str(first.resolve()),)]

    shown = farm_cli("submit", str(second), "-i", str(inventory), "--db", db_url)
    lines = shown.stderr.strip().splitlines()
    assert shown.returncode == 2 and len(lines) == 2, shown.stderr
    assert lines[0].startswith(f"error: {second}: name: ") and str(first.resolve()) in lines[0]
    assert lines[1].startswith("hint: rename it (name: ") and "farm sweeps rm s" in lines[1]
    assert _row_counts(db_url) == before


def test_the_same_file_is_the_same_sweep_however_its_path_is_written(
        write_yaml, db_url, tmp_path, monkeypatch):
    """A resubmit through another spelling of the path is the same sweep; so is a sweep stored
    by an earlier farm with the path as typed (relative), whose row then gets the full path; so
    is a file moved (nothing left where it was) or copied (the same bytes)."""
    inventory = _inventory(write_yaml)
    path = _sweep_file(tmp_path / "a")
    _record(db_url, path, inventory, {1: "done"}, source="a/sweep.yaml").close()
    monkeypatch.chdir(tmp_path / "a")
    assert submit("sweep.yaml", inventory, db=db_url).counts == {"done": 1}
    assert submit(tmp_path / "a" / ".." / "a" / "sweep.yaml", inventory, db=db_url).ran == 0
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        assert db.execute("select source from sweeps").fetchall() == [(str(path.resolve()),)]

    same = stores.same_sweep_file
    assert same(str(path), str(path)) and same("/gone/sweep.yaml", str(path))  # moved here
    assert same("sweep.yaml", str(path)) and same("./a/sweep.yaml", str(path))  # an older farm's
    assert not same("b/sweep.yaml", str(path)) and not same("other.yaml", str(path))
    copy = tmp_path / "copy.yaml"
    copy.write_bytes(path.read_bytes())
    assert same(str(copy), str(path))  # a copy: the same jobs
    copy.write_text(path.read_text() + "# changed\n")
    assert not same(str(copy), str(path))


def test_remove_sweep_takes_its_rows_and_nothing_else(write_yaml, db_url, tmp_path):
    inventory = _inventory(write_yaml)
    old = _sweep_file(tmp_path / "old", batch_sizes=(1, 2, 4))
    store = _record(db_url, old, inventory, {1: "done", 2: "oom", 4: "failed"})
    kept = _sweep_file(tmp_path / "kept", name="kept")
    _record(db_url, kept, inventory, {1: "done"}).close()
    job_id = _job_id(db_url, "s", 1)
    store.job_finished(job_id, {  # scored, this time: with metrics and predictions
        "status": "done", "device": "box", "started_at": 1000.0, "finished_at": 1002.0,
        "result": {"p50_ms": 2.0, "metrics": {"accuracy": 0.5}, "predictions": [(0, "a", "b")],
                   "load": {"load_key": f"load-{job_id}", "model": {"name": "bert-tiny"},
                            "variant": "fp32"}}})
    store.device_state("box", "local", "idle", job_id=job_id)  # it last ran one of them

    store.begin_run("s", {})  # a live run drives it: refused, nothing removed
    before = _row_counts(db_url)
    with pytest.raises(Busy, match="'s' is being run"):
        api.remove_sweep("s", db=db_url)
    assert _row_counts(db_url) == before
    store.end_run("finished")
    second = _sweep_file(tmp_path / "second", batch_sizes=(1,))  # another file, the same name
    with pytest.raises(ConfigError, match="farm sweeps rm s"):  # refused by the store itself too
        store.add_sweep(load_sweep(second), str(second), load_inventory(inventory), [])
    store.close()

    assert api.remove_sweep("s", db=db_url) == 3
    after = _row_counts(db_url)
    assert (after["sweeps"], after["jobs"], after["results"], after["attempts"]) == (1, 1, 1, 1)
    assert (after["metrics"], after["predictions"], after["devices"]) == (0, 0, 1)
    assert after["runs"] == 0 and after["model_loads"] == 1
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        assert db.execute("select name from sweeps").fetchall() == [("kept",)]
        assert db.execute("select job_id from devices").fetchall() == [(None,)]

    with pytest.raises(QueryError) as unknown:
        api.remove_sweep("s", db=db_url)
    assert "no sweep named 's'" in unknown.value.message and "kept" in unknown.value.hint
    _record(db_url, second, inventory, {1: "done"}).close()  # the name is free again
    assert submit(second, inventory, db=db_url).counts == {"done": 1}


def _job_id(db_url, sweep: str, batch_size: int) -> int:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        return db.execute("select j.id from jobs j join sweeps s on s.id = j.sweep_id where "
                          "s.name = ? and j.batch_size = ?", (sweep, batch_size)).fetchone()[0]


# --- 3. farm status: oom is a result, cancelled is counted -----------------------------------

def test_status_shows_oom_among_results_and_cancelled_among_sweeps(write_yaml, db_url, tmp_path):
    inventory = _inventory(write_yaml)
    path = _sweep_file(tmp_path / "a", batch_sizes=(1, 2, 4, 8))
    store = _record(db_url, path, inventory, {1: "done", 2: "oom", 4: "failed", 8: "cancelled"})
    store.close()

    snapshot = status_snapshot(db_url)
    assert [r["status"] for r in snapshot["failures"]] == ["failed"]
    assert sorted(r["status"] for r in snapshot["latest"]) == ["done", "oom"]
    oom = next(r for r in snapshot["latest"] if r["status"] == "oom")
    assert oom["peak_mem_mb"] == 530.0 and oom["p50_ms"] is None

    screen = _text(status_view(snapshot))
    latest = screen[screen.index("latest results"):screen.index("failed jobs")]
    failed = screen[screen.index("failed jobs"):]
    assert "bert-tiny fp32 synthetic b2 s16" in latest and " oom " in latest
    assert "530" in latest and OOM_ERROR in latest
    assert "b2 s16" not in failed and "oom" not in failed and "b4 s16" in failed
    sweeps = screen[:screen.index("devices")]
    assert "1 cancelled" in sweeps and "1 oom" in sweeps and "1 failed" in sweeps
