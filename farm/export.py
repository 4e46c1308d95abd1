"""Every column of every result, with the raw per-call latencies, as CSV, JSON or Parquet.

Columns keep the rows' key order (keys first seen in a later row follow), then `latencies_ms`:
the job's per-call latencies in ms (`results.latencies_json`), null where the job has none.
Times (datetimes, or the ISO strings SQLite hands back for *_at columns) are UTC, as the store
keeps them: written as ISO 8601 with "+00:00" in CSV and JSON, as timestamp[us, UTC] in Parquet.
A figure that was not measured stays empty (CSV) or null (JSON, Parquet).
"""
from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path

LATENCIES = "latencies_ms"


def export_rows(rows, latencies: dict[str, list[float]], fmt: str, out: Path) -> Path:
    """Write rows (v_results dicts) to out as fmt ('csv', 'json' or 'parquet'); returns out.

    latencies maps job_key -> the job's per-call latencies in ms."""
    write = _WRITERS.get(fmt)
    if write is None:
        raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(_WRITERS)}")
    rows = list(rows)
    columns = list(dict.fromkeys(k for r in rows for k in r if k != LATENCIES))
    times = {c for c in columns if c.endswith("_at")
             or any(isinstance(r.get(c), datetime) for r in rows)}
    records = [{**{c: _utc(r.get(c)) if c in times else r.get(c) for c in columns},
                LATENCIES: _latencies(latencies.get(r.get("job_key")))} for r in rows]
    out = Path(out)
    write(records, [*columns, LATENCIES], times, out)
    return out


def _utc(value) -> datetime | None:
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(when, datetime):
        raise TypeError(f"{value!r} is not a date and time")
    return (when.replace(tzinfo=timezone.utc) if when.tzinfo is None
            else when.astimezone(timezone.utc))


def _latencies(values) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _write_csv(records: list[dict], columns: list[str], _times, out: Path) -> None:
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([_text(r[c]) for c in columns] for r in records)


def _write_json(records: list[dict], _columns, _times, out: Path) -> None:
    def iso(value):
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(f"cannot write {type(value).__name__} as JSON")
    out.write_text(json.dumps(records, indent=1, default=iso) + "\n")


def _write_parquet(records: list[dict], columns: list[str], times: set[str], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def column(name: str):
        values = [r[name] for r in records]
        kind = (pa.timestamp("us", tz="UTC") if name in times else
                pa.list_(pa.float64()) if name == LATENCIES else None)
        return pa.array(values, type=kind)
    pq.write_table(pa.table({name: column(name) for name in columns}), out)


_WRITERS = {"csv": _write_csv, "json": _write_json, "parquet": _write_parquet}
