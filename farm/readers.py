"""farm's readers: what `farm status`, `farm sql`, `farm table`, `farm report`, `farm export`,
`farm compare` and `farm devices` read, as a notebook can call it too (farm.api re-exports
them). Everything here reads the database alone, never writes it, and imports neither Ray nor
the controller: a reader starts in well under a second."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from farm.errors import QueryError
from farm.store import queries, url_shown
from farm.store.readonly import QUERY_TIMEOUT_S, ReadOnly, database_exists

DEFAULT_INVENTORY = "inventory.yaml"
RECENT_HOURS = 24
COMPARE_BY = ("variant", "device")


def device_table(inventory_file: str | Path = DEFAULT_INVENTORY,
                 db: str | None = None) -> list[dict]:
    """Every inventory device with what the database last heard of it (never contacts them)."""
    from farm.devices.kinds import kind_of
    from farm.inventory import load_inventory

    inventory = load_inventory(inventory_file)
    known = {}
    if database_exists(db):  # no database yet: every device is simply 'unknown'
        with contextlib.closing(ReadOnly(db)) as reader:
            known = {row["name"]: row for row in queries.device_rows(reader)}
    rows = []
    for device in inventory.devices:
        row = known.get(device.name) or {"state": "unknown", "last_seen": None,
                                         "last_error": None}
        rows.append({**row, "name": device.name, "kind": device.kind, "tags": device.tags,
                     "where": kind_of(device).where(device)})
    return rows


def sql(query: str, db: str | None = None,
        timeout_s: float = QUERY_TIMEOUT_S) -> tuple[list[str], list[tuple]]:
    """Run a read-only query (a write fails and changes nothing), stopped after `timeout_s`."""
    with contextlib.closing(ReadOnly(db)) as reader:
        return reader.query(query, timeout_s=timeout_s)


def status_snapshot(db: str | None = None, recent_hours: float = RECENT_HOURS) -> dict:
    """What `farm status` shows, read from the database alone (never Ray, never a device): the
    database's time (UTC); the active and recent sweeps with their progress, state and pace
    (farm.store.queries.recent_sweeps); the devices, each with its pool (a tag of its, else
    its kind); the latest results; the latest failures."""
    with contextlib.closing(ReadOnly(db)) as reader:
        now = queries.database_now(reader)
        pools = queries.device_pools(reader)
        devices = [{**{k: v for k, v in d.items() if k != "facts_json"},
                    "pool": pools.get(d["name"], d["kind"])} for d in queries.device_rows(reader)]
        return {"now": now, "sweeps": queries.recent_sweeps(reader, now, recent_hours),
                "devices": devices, "latest": queries.latest_results(reader),
                "failures": queries.latest_failures(reader)}


def sweep_rows(sweep: str, db: str | None = None, with_latencies: bool = False,
               columns: tuple[str, ...] = ("*",)):
    """A sweep's v_results rows, every column or these (and, if asked, each job's raw latencies
    by job key)."""
    with contextlib.closing(ReadOnly(db)) as reader:
        require_sweeps(reader, sweep)
        rows = queries.sweep_results(reader, sweep, columns)
        return (rows, queries.raw_latencies(reader, sweep)) if with_latencies else rows


def table_rows(sweep: str, db: str | None = None) -> list[dict]:
    """A sweep's v_results rows as `farm table` reads them: only the columns of the researchers'
    table and early exit's (farm.tables.COLUMNS, farm.exits.TABLE_COLUMNS)."""
    from farm.exits import TABLE_COLUMNS
    from farm.tables import COLUMNS

    return sweep_rows(sweep, db, columns=COLUMNS + TABLE_COLUMNS)


def require_sweeps(reader: ReadOnly, *names: str) -> None:
    """QueryError, listing the known sweeps, for the first of `names` the database lacks."""
    known = queries.sweep_names(reader)
    for name in names:
        if name not in known:
            raise QueryError(f"no sweep named {name!r} in {url_shown(reader.url)}",
                             f"known sweeps: {', '.join(known) or 'none yet'}")


def variants_against_fp32(sweep: str, db: str | None = None) -> list[dict]:
    """`farm compare SWEEP --baseline fp32`'s records, for the report; none where the sweep has
    no fp32 result to compare with."""
    try:
        return report_rows(sweep, db)[1]
    except QueryError:  # no such sweep
        return []


def report_rows(sweep: str, db: str | None = None) -> tuple[list[dict], list[dict]]:
    """What `farm report` shows, from one reading of the sweep: its v_results rows
    (sweep_rows) and its variants against fp32 (variants_against_fp32)."""
    rows, against_fp32 = report_reading(sweep, db)
    return rows, against_fp32()


def report_reading(sweep: str, db: str | None = None
                   ) -> tuple[list[dict], Callable[[], list[dict]]]:
    """report_rows(), read now and compared later: the rows, and what works out the variants
    against fp32 from what was read with them (`farm report` calls it while its charts are
    drawn). Everything is read in one reading, so the two agree on a sweep still running."""
    from farm.comparisons import MIN_CHANGE
    from farm.compare_view import difference_records

    with contextlib.closing(ReadOnly(db)) as reader:
        require_sweeps(reader, sweep)
        rows = queries.sweep_results(reader, sweep)
        try:
            compare_them = _to_compare(reader, sweep, rows, None, "variant", None, MIN_CHANGE)
        except QueryError:  # no fp32 in the sweep
            return rows, list  # list() is [], nothing to compare
    return rows, lambda: difference_records(compare_them(), "variant")


def compare(sweep: str, other_sweep: str | None = None, by: str = "variant",
            baseline: str | None = None, db: str | None = None,
            min_change: float | None = None) -> list:
    """`farm compare`: each done result against its baseline on the same work, with the ratio
    of median latencies, its bootstrap interval, a Mann-Whitney p-value and, where both were
    scored on the same examples, the score's difference (farm.comparisons.Difference, whose
    rows hold the v_results columns farm.comparisons.COLUMNS). Where both sides have a
    sweep's `repeats`, between repeats (each repeat's median); else on the per-call
    latencies. A ratio within min_change of 1 (default 2%) is ~ however significant.

    With other_sweep: the same jobs of two sweeps, the first as baseline. Else, within one
    sweep, by variant (baseline: a variant's name, fp32 unless given) or by device (baseline: a
    device's name)."""
    from farm.comparisons import COLUMNS, MIN_CHANGE

    if by not in COMPARE_BY:
        raise QueryError(f"--by {by!r} is not a way to compare", "use --by variant or --by device")
    min_change = MIN_CHANGE if min_change is None else min_change
    if not 0 <= min_change < 1:
        raise QueryError(f"--min-change {min_change} is not a fraction from 0 to 1",
                         "use e.g. --min-change 0.02 for 2% (0: any significant change counts)")
    with contextlib.closing(ReadOnly(db)) as reader:
        require_sweeps(reader, *filter(None, (sweep, other_sweep)))
        return _to_compare(reader, sweep, queries.sweep_results(reader, sweep, COLUMNS),
                           other_sweep, by, baseline, min_change)()


def _to_compare(reader: ReadOnly, sweep: str, rows: list[dict], other_sweep: str | None, by: str,
                baseline: str | None, min_change: float) -> Callable[[], list]:
    """compare() of a sweep's rows, read already (its arguments checked): all read and
    checked now (a QueryError now), worked out when called."""
    from farm.comparisons import COLUMNS, differences, pairs, sweep_pairs

    latencies, scored = queries.raw_latencies(reader, sweep), queries.predictions(reader, sweep)
    if other_sweep:
        if baseline:
            raise QueryError("--baseline is for one sweep; with two, the first is the "
                             "baseline", f"farm compare {sweep} {other_sweep}")
        if other_sweep != sweep:
            latencies.update(queries.raw_latencies(reader, other_sweep))
            scored.update(queries.predictions(reader, other_sweep))
        found = sweep_pairs(rows, queries.sweep_results(reader, other_sweep, COLUMNS))
    else:
        baseline = baseline or ("fp32" if by == "variant" else None)
        values = sorted({str(r[by]) for r in rows if r[by] is not None})
        if baseline not in values:
            what = "--baseline names no " + by if baseline else f"--by {by} needs --baseline"
            raise QueryError(f"{what} of sweep {sweep!r}"
                             + (f" ({baseline!r})" if baseline else ""),
                             f"its {by}s: {', '.join(values) or 'none done'}")
        found = pairs(rows, by, baseline)
    return lambda: differences(found, latencies, scored, min_change)
