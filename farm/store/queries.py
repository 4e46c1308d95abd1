"""What farm's readers ask the database (`farm status`, `farm devices`, resume and cancel,
tables, reports, exports): one function per question, each taking a farm.store.readonly.ReadOnly
reader and returning rows as dicts. Nothing here writes."""
from __future__ import annotations

import json

from farm.store import SWEEP_RESULTS
from farm.store.readonly import ReadOnly


def stored_sweep(reader: ReadOnly, name: str) -> dict | None:
    """A sweep as last submitted: its source file, spec and inventory (JSON); None if unknown."""
    rows = reader.rows("SELECT source, spec_json, inventory_json FROM sweeps "
                       "WHERE name = :name", {"name": name})
    return rows[0] if rows else None


def sweep_names(reader: ReadOnly) -> list[str]:
    return [r["name"] for r in reader.rows("SELECT name FROM sweeps ORDER BY name")]


def sweep_results(reader: ReadOnly, name: str) -> list[dict]:
    """A sweep's v_results rows."""
    return reader.rows(SWEEP_RESULTS, {"name": name})


def predictions(reader: ReadOnly, name: str) -> dict[str, list[tuple[str, str]]]:
    """Each of a sweep's scored jobs' (label, prediction) per example in file order, by job key."""
    found: dict[str, list[tuple[str, str]]] = {}
    for r in reader.rows("SELECT j.key, p.label, p.prediction FROM predictions p JOIN jobs j ON "
                         "j.id = p.job_id JOIN sweeps s ON s.id = j.sweep_id WHERE s.name = :n "
                         "ORDER BY j.key, p.example", {"n": name}):
        found.setdefault(r["key"], []).append((r["label"], r["prediction"]))
    return found


def raw_latencies(reader: ReadOnly, name: str) -> dict[str, list[float]]:
    """Each of a sweep's results' per-call latencies (ms), by job key."""
    raw = reader.rows("SELECT j.key, r.latencies_json FROM results r JOIN jobs j ON "
                      "j.id = r.job_id JOIN sweeps s ON s.id = j.sweep_id WHERE s.name = :n",
                      {"n": name})
    return {r["key"]: json.loads(r["latencies_json"]) for r in raw if r["latencies_json"]}


def device_rows(reader: ReadOnly) -> list[dict]:
    """Each device the controller has written about, with the job it runs and what the board
    itself reported (tegrastats, its thermal zones) in its latest timed window."""
    return reader.rows(
        "SELECT d.name, d.kind, d.state, d.last_seen, d.last_error, d.facts_json, "
        "j.model, j.variant, j.task, j.batch_size, j.seq_len, j.phase, j.started_at, "
        "(SELECT r.avg_power_mw FROM results r WHERE r.device = d.name AND "
        " r.avg_power_mw IS NOT NULL ORDER BY r.id DESC LIMIT 1) AS power_mw, "
        "(SELECT r.board_ram_peak_mb FROM results r WHERE r.device = d.name AND "
        " r.board_ram_peak_mb IS NOT NULL ORDER BY r.id DESC LIMIT 1) AS board_ram_mb, "
        "(SELECT r.temp_c_end FROM results r WHERE r.device = d.name AND "
        " r.temp_c_end IS NOT NULL ORDER BY r.id DESC LIMIT 1) AS temp_c, "
        "(SELECT r.throttled FROM results r WHERE r.device = d.name AND "
        " r.throttled IS NOT NULL ORDER BY r.id DESC LIMIT 1) AS throttled "
        "FROM devices d LEFT JOIN jobs j ON j.id = d.job_id ORDER BY d.name")


def database_now(reader: ReadOnly) -> str:
    """The database's clock (UTC), which every stored time was written by."""
    return reader.rows("SELECT CURRENT_TIMESTAMP AS now")[0]["now"]


def recent_sweeps(reader: ReadOnly, now: str, recent_hours: float) -> list[dict]:
    """The sweeps running, or touched within the last hours, with their progress (up to 6)."""
    return reader.rows(
        "SELECT s.id, s.name, s.updated_at, COUNT(j.id) AS total, "
        "SUM(j.status = 'done') AS done, SUM(j.status = 'oom') AS oom, "
        "SUM(j.status IN ('failed', 'timeout')) AS failed, "
        "SUM(j.status = 'running') AS running, SUM(j.status = 'queued') AS queued, "
        "SUM(j.status = 'cancelled') AS cancelled, MIN(j.started_at) AS first_started, "
        "MAX(j.finished_at) AS last_finished, "
        "SUM(j.finished_at >= datetime(:now, '-10 minutes')) AS finished_10min "
        "FROM sweeps s JOIN jobs j ON j.sweep_id = s.id GROUP BY s.id "
        "HAVING running > 0 OR s.updated_at >= datetime(:now, :recent) "
        "OR MAX(j.finished_at) >= datetime(:now, :recent) ORDER BY s.updated_at DESC LIMIT 6",
        {"now": now, "recent": f"-{recent_hours} hours"})


def latest_results(reader: ReadOnly) -> list[dict]:
    """The 8 newest results across sweeps: done, and oom (the model does not fit the device:
    a result too, with the memory it reached and why it ended)."""
    return reader.rows(
        "SELECT sweep, device, model, variant, task, batch_size, seq_len, status, p50_ms, "
        "per_sample_ms, peak_mem_mb, energy_mj, error, finished_at FROM v_results "
        "WHERE status IN ('done', 'oom') ORDER BY finished_at DESC LIMIT 8")


def latest_failures(reader: ReadOnly) -> list[dict]:
    """The 8 newest jobs that ended failed or timeout, with why."""
    return reader.rows(
        "SELECT sweep, device, model, variant, task, batch_size, seq_len, status, failure, "
        "error, finished_at FROM v_results WHERE status IN ('failed', 'timeout') "
        "ORDER BY finished_at DESC LIMIT 8")
