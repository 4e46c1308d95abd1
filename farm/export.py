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
from operator import itemgetter
from pathlib import Path

LATENCIES = "latencies_ms"
# What csv's writer writes as _text does (None as "", the rest as str() does); a column that
# holds anything else in some row (a time, a list) is written through _text.
PLAIN = frozenset({str, int, float, bool, type(None)})


def export_rows(rows, latencies: dict[str, list[float]], fmt: str, out: Path) -> Path:
    """Write rows (v_results dicts) to out as fmt ('csv', 'json' or 'parquet'); returns out.

    latencies maps job_key -> the job's per-call latencies in ms."""
    write = _WRITERS.get(fmt)
    if write is None:
        raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(_WRITERS)}")
    rows = list(rows)
    # The rows' distinct key orders, then their keys: each row's keys gone over once, in C.
    shapes = dict.fromkeys(map(tuple, rows))
    columns = list(dict.fromkeys(k for shape in shapes for k in shape if k != LATENCIES))
    held = {k for r in rows for k, v in r.items() if type(v) not in PLAIN}
    times = {c for c in columns if c.endswith("_at")
             or c in held and any(isinstance(r.get(c), datetime) for r in rows)}
    out = Path(out)
    write(_Rows(rows, columns, times, held, latencies, alike=len(shapes) == 1), out)
    return out


class _Rows:
    """What a writer writes: the rows' columns (then LATENCIES), which of them are times
    (`times`) and which hold something not PLAIN in some row (`held`)."""

    def __init__(self, rows: list[dict], columns: list[str], times: set[str], held: set[str],
                 latencies: dict[str, list[float]], alike: bool):
        self.rows, self.columns, self.times, self.held = rows, columns, times, held
        self.latencies, self.alike = latencies, alike

    def values(self, r: dict) -> list:
        """A row's values in column order, times in UTC, then its latencies."""
        return [*(_utc(r.get(c)) if c in self.times else r.get(c) for c in self.columns),
                self.of(r)]

    def of(self, r: dict) -> list[float] | None:
        return _latencies(self.latencies.get(r.get("job_key")))

    def records(self) -> list[dict]:
        names = [*self.columns, LATENCIES]
        return [dict(zip(names, self.values(r))) for r in self.rows]


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


def _write_csv(rows: _Rows, out: Path) -> None:
    """Only the columns `held` (times, lists) and the latencies go through _text; csv's writer
    writes the PLAIN values as _text would (the grid's 20,736 rows of 120 columns took a
    second more as a record each, every value through _text)."""
    columns = rows.columns
    if rows.alike and len(columns) > 1:  # every row has every column: taken in C
        values = itemgetter(*columns)
    else:
        def values(r: dict) -> list:
            return [r.get(c) for c in columns]
    mend = [(i, c in rows.times) for i, c in enumerate(columns)
            if c in rows.times or c in rows.held]

    def line(r: dict) -> list:
        cells = list(values(r))
        for i, is_time in mend:
            cells[i] = _text(_utc(cells[i]) if is_time else cells[i])
        cells.append(_text(rows.of(r)))
        return cells
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, LATENCIES])
        writer.writerows(map(line, rows.rows))


def _write_json(rows: _Rows, out: Path) -> None:
    def iso(value):
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(f"cannot write {type(value).__name__} as JSON")
    out.write_text(json.dumps(rows.records(), indent=1, default=iso) + "\n")


def _write_parquet(rows: _Rows, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = rows.records()

    def column(name: str):
        values = [r[name] for r in records]
        kind = (pa.timestamp("us", tz="UTC") if name in rows.times else
                pa.list_(pa.float64()) if name == LATENCIES else None)
        return pa.array(values, type=kind)
    pq.write_table(pa.table({name: column(name) for name in [*rows.columns, LATENCIES]}), out)


_WRITERS = {"csv": _write_csv, "json": _write_json, "parquet": _write_parquet}
