"""What farm's readers ask the database (`farm status`, `farm devices`, resume and cancel,
tables, reports, exports): one function per question, each taking a farm.store.readonly.ReadOnly
reader and returning rows as dicts. Nothing here writes."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from farm.results import FINAL
from farm.store import SWEEP_RESULTS_OF
from farm.store.readonly import ReadOnly
from farm.store.clock import STALE_S


def stored_sweep(reader: ReadOnly, name: str) -> dict | None:
    """A sweep as last submitted: its source file, spec and inventory (JSON); None if unknown."""
    rows = reader.rows("SELECT source, spec_json, inventory_json FROM sweeps "
                       "WHERE name = :name", {"name": name})
    return rows[0] if rows else None


def sweep_names(reader: ReadOnly) -> list[str]:
    return [r["name"] for r in reader.rows("SELECT name FROM sweeps ORDER BY name")]


def sweep_results(reader: ReadOnly, name: str, columns: tuple[str, ...] = ("*",)) -> list[dict]:
    """A sweep's v_results rows: all their columns, or these (`farm compare` needs a tenth of
    them, and the rest of a sweep of 20,000 rows took most of a second to read)."""
    return reader.rows(SWEEP_RESULTS_OF.format(", ".join(columns)), {"name": name})


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
    raw = [r for r in raw if r["latencies_json"]]
    # parsed as one JSON array: a call into the parser a result took a quarter of the time
    lists = json.loads(f"[{','.join(r['latencies_json'] for r in raw)}]")
    return {r["key"]: latencies for r, latencies in zip(raw, lists)}


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


def device_pools(reader: ReadOnly, sweeps: int = 20) -> dict[str, str]:
    """Each device's pool, by name: the tag by which the newest of the last sweeps that listed
    it in its inventory named it as a target; else its first tag there. A device in no
    sweep's inventory, or with no tags, is in none."""
    pools: dict[str, str] = {}
    for r in reader.rows("SELECT spec_json, inventory_json FROM sweeps "
                         "ORDER BY updated_at DESC LIMIT :n", {"n": sweeps}):
        targets = json.loads(r["spec_json"] or "{}").get("devices") or ()
        for device in json.loads(r["inventory_json"] or "{}").get("devices", ()):
            tags = device.get("tags") or ()
            named = [t for t in targets if t in tags]
            if device["name"] not in pools and (named or tags):
                pools[device["name"]] = (named or tags)[0]
    return pools


def database_now(reader: ReadOnly) -> str:
    """The database's clock in UTC, as SQLite writes it ('YYYY-MM-DD HH:MM:SS'); PostgreSQL's
    CURRENT_TIMESTAMP, which carries the server's time zone, is brought to the same."""
    now = reader.rows("SELECT CURRENT_TIMESTAMP AS now")[0]["now"]
    if isinstance(now, datetime):
        return f"{now.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S}"
    return now


def _before(now: str, **span: float) -> str:
    """`now` less a span, as SQLite's datetime() writes it: compared as text with SQLite's
    stored times, and read as a timestamp by PostgreSQL."""
    return f"{datetime.fromisoformat(now) - timedelta(**span):%Y-%m-%d %H:%M:%S}"


def _count(condition: str) -> str:
    """How many of a group's rows meet `condition` (a SUM of comparisons is SQLite's alone)."""
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


_PROGRESS = (("done", "j.status = 'done'"), ("oom", "j.status = 'oom'"),
             ("failed", "j.status IN ('failed', 'timeout')"), ("running", "j.status = 'running'"),
             ("queued", "j.status = 'queued'"), ("cancelled", "j.status = 'cancelled'"))


_FINISHED = f"j.status IN ({', '.join(repr(status.value) for status in FINAL)})"


SWEEPS_SHOWN = 6
# The sweeps recent_sweeps may show, found from indexes (0015's on finished_at) so that only
# their jobs are counted, not every sweep's: those with a job running or finished since, and
# of those updated since, the newest SWEEPS_SHOWN (each passes its HAVING, and any other
# updated since is older than they are, so it would not be shown).
_MAYBE_RECENT = (
    "SELECT id FROM (SELECT s.id FROM sweeps s WHERE s.updated_at >= :recent AND EXISTS "
    "(SELECT 1 FROM jobs x WHERE x.sweep_id = s.id) ORDER BY s.updated_at DESC "
    f"LIMIT {SWEEPS_SHOWN}) AS newest UNION SELECT sweep_id FROM jobs WHERE status = 'running' "
    "UNION SELECT sweep_id FROM jobs WHERE finished_at >= :recent")


def recent_sweeps(reader: ReadOnly, now: str, recent_hours: float) -> list[dict]:
    """The sweeps running, or touched within the last hours (up to SWEEPS_SHOWN), with their
    progress, their state (running, incomplete, finished) and the pace of their newest run
    (_pace)."""
    counts = ", ".join(f"{_count(condition)} AS {name}" for name, condition in _PROGRESS)
    rows = reader.rows(
        f"SELECT s.id, s.name, s.updated_at, COUNT(j.id) AS total, {counts}, "
        "MIN(j.started_at) AS first_started, "
        f"MAX(CASE WHEN {_FINISHED} THEN j.finished_at END) AS last_finished, "
        "r.started_at AS run_started, r.heartbeat_at AS run_heartbeat, r.ended_at AS run_ended, "
        f"{_count(f'j.finished_at >= r.started_at AND {_FINISHED}')} AS finished_in_run "
        "FROM sweeps s JOIN jobs j ON j.sweep_id = s.id "
        "LEFT JOIN runs r ON r.id = (SELECT MAX(n.id) FROM runs n WHERE n.sweep = s.name) "
        f"WHERE s.id IN ({_MAYBE_RECENT}) "
        "GROUP BY s.id, s.name, s.updated_at, r.started_at, r.heartbeat_at, r.ended_at "
        f"HAVING {_count(dict(_PROGRESS)['running'])} > 0 OR s.updated_at >= :recent "
        f"OR MAX(j.finished_at) >= :recent ORDER BY s.updated_at DESC LIMIT {SWEEPS_SHOWN}",
        {"recent": _before(now, hours=recent_hours)})
    return [{**row, **_pace(row, now)} for row in rows]


def _pace(sweep: dict, now: str) -> dict:
    """A sweep's state (running: jobs are, or a live run drives it); the jobs per minute its
    newest run took to a final end, over the time it has run (none before two); and, while
    that run is alive, the seconds the jobs queued and running need at that rate."""
    started, now = _time(sweep["run_started"]), _time(now)
    beat = _time(sweep["run_heartbeat"])
    live = sweep["run_ended"] is None and beat is not None and \
        (now - beat).total_seconds() <= STALE_S
    left = (sweep["queued"] or 0) + (sweep["running"] or 0)
    state = ("running" if sweep["running"] or (live and left) else
             "incomplete" if left or sweep["cancelled"] else "finished")
    end = now if live else _time(sweep["run_ended"]) or beat
    ran = (end - started).total_seconds() if started else 0
    finished = sweep["finished_in_run"] or 0
    rate = round(60 * finished / ran, 3) if finished >= 2 and ran > 0 else None
    return {"state": state, "rate_per_min": rate,
            "eta_s": round(60 * left / rate) if rate and live and left else None}


def _time(value) -> datetime | None:
    """A stored time as a naive UTC datetime: SQLite gives text, PostgreSQL a datetime."""
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when


def latest_results(reader: ReadOnly) -> list[dict]:
    """The 8 newest results across sweeps: done, and oom (the model does not fit the device:
    a result too, with the memory it reached and why it ended)."""
    # Most jobs end done: SQLite, left to itself, reads them all by the status index and sorts
    # them; `+status` (SQLite's way to keep an index out) walks 0015's on finished_at instead.
    status = "+status" if reader.sqlite else "status"
    return reader.rows(
        "SELECT sweep, device, model, variant, task, batch_size, seq_len, status, p50_ms, "
        "per_sample_ms, peak_mem_mb, energy_mj, error, finished_at FROM v_results "
        f"WHERE {status} IN ('done', 'oom') ORDER BY finished_at DESC LIMIT 8")


def latest_failures(reader: ReadOnly) -> list[dict]:
    """The 8 newest jobs that ended failed or timeout, with why."""
    return reader.rows(
        "SELECT sweep, device, model, variant, task, batch_size, seq_len, status, failure, "
        "error, finished_at FROM v_results WHERE status IN ('failed', 'timeout') "
        "ORDER BY finished_at DESC LIMIT 8")


# What a result of another sweep is read with to stand in as a baseline (farm.comparisons).
_BASELINE_COLUMNS = ("sweep", "job_key", "device", "model", "variant", "variant_spec", "task",
                     "batch_size", "seq_len", "status", "finished_at", "per_sample_ms",
                     "model_memory_mb", "params", "flops", "logits_json")
_JOB_FACTS = ("SELECT j.key AS job_key, j.model_path, j.spec_json, d.kind AS device_kind "
              "FROM jobs j JOIN sweeps s ON s.id = j.sweep_id "
              "LEFT JOIN devices d ON d.name = j.device WHERE s.name = :sweep")
_DONE_ELSEWHERE = (
    "SELECT " + ", ".join(f"v.{c}" for c in _BASELINE_COLUMNS) + ", j.spec_json, "
    "d.kind AS device_kind FROM v_results v JOIN sweeps s ON s.name = v.sweep "
    "JOIN jobs j ON j.sweep_id = s.id AND j.key = v.job_key "
    "LEFT JOIN devices d ON d.name = v.device "
    "WHERE v.model = :model AND v.status = 'done' AND j.model_path IS NULL "
    "ORDER BY v.finished_at DESC")


def baselines_elsewhere(reader: ReadOnly, rows: list[dict]) -> dict[tuple, list[dict]]:
    """For each row, by (sweep, job key), the results of other sweeps that may stand in for its
    own baselines (farm.comparisons.compare): done, of the same catalog model, task, batch
    size, sequence length and data, on a device of the same kind (which computes the same
    logits); newest first, those with logits before those without.

    A catalog model's weights are seeded (agents.catalog.CATALOG_SEED): one name is one set of
    weights in every sweep. A checkpoint (path: or hub:) is stored by its path alone, which
    says nothing of what its files held when it ran, so a checkpoint's rows get none here:
    their baselines come from their own sweep only."""
    sweeps = {r.get("sweep") for r in rows}
    facts = {(sweep, j["job_key"]): j for sweep in sweeps
             for j in reader.rows(_JOB_FACTS, {"sweep": sweep})}
    done: dict[str, list[tuple]] = {}  # model -> (device kind, data, row) of other sweeps
    found: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r.get("sweep"), r.get("job_key"))
        own = facts.get(key)
        if own is None or own["model_path"] is not None or own["device_kind"] is None:
            continue
        if r["model"] not in done:
            done[r["model"]] = _done_elsewhere(reader, r["model"], sweeps)
        mine = (own["device_kind"], _data_identity(own["spec_json"]))
        found[key] = [c for kind, data, c in done[r["model"]] if (kind, data) == mine
                      and all(c[k] == r[k] for k in ("task", "batch_size", "seq_len"))]
    return found


def _done_elsewhere(reader: ReadOnly, model: str, sweeps: set) -> list[tuple]:
    """A catalog model's done results outside `sweeps`, each with its device's kind and data."""
    rows = [r for r in reader.rows(_DONE_ELSEWHERE, {"model": model}) if r["sweep"] not in sweeps]
    rows.sort(key=lambda r: r["logits_json"] is None)  # stable: newest first within each
    return [(r["device_kind"], _data_identity(r["spec_json"]),
             {k: r[k] for k in _BASELINE_COLUMNS}) for r in rows]


def _data_identity(spec_json: str | None):
    """A GLUE job's examples (their digest and count); None for synthetic inputs, which are
    seeded (agents.models.synthetic_inputs)."""
    return json.loads(spec_json or "{}").get("data")
