"""Reading the results database without any way to change it (`farm sql`, `farm status`,
tables, reports, exports).

SQLite is opened read-only by the driver (a `mode=ro` URI) and with `PRAGMA query_only`, so a
write statement fails inside SQLite itself and changes nothing; ATTACH (and VACUUM INTO, which
attaches its target) is refused by a limit of no attached databases, before SQLite opens, or
creates, any other file. Other databases run every query in a READ ONLY transaction that is
rolled back; on PostgreSQL (psycopg) every query is prepared, so it is one statement that cannot
end that transaction and write after it. Nothing here migrates: reading never writes.

A user's query has a time limit and stops at Ctrl-C: SQLite runs it in C, where Python's signal
handling cannot reach, so a progress handler polled by SQLite itself ends it.
"""
from __future__ import annotations

import signal
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from farm.errors import Interrupted, QueryError, StoreError
from farm.store import BUSY_TIMEOUT_MS, _reason, driver_url, resolve_url, url_shown

QUERY_TIMEOUT_S = 60.0
_POLL_EVERY = 10_000  # SQLite virtual-machine steps between two looks at the clock and Ctrl-C


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def database_exists(url: str | None) -> bool:
    """False only for an SQLite file that is not there yet (servers are assumed to exist)."""
    path = _sqlite_path(resolve_url(url))
    return path is None or path.exists()


def _engine(url: str):
    path = _sqlite_path(url)
    if path is None:
        return create_engine(driver_url(url), connect_args=_one_statement(url))
    if not path.exists():
        raise StoreError(f"no database at {path}", "run `farm submit` first, or point --db / "
                         "FARM_DB at the results database")
    # The driver is given the file itself: a path holding '?', '#' or '%' is quoted for the URI
    # here, never parsed as a URL's query.
    uri = f"file:{quote(str(path))}?mode=ro"
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(
        uri, uri=True, check_same_thread=False))
    event.listen(engine, "connect", _sqlite_read_only)
    return engine


def _one_statement(url: str) -> dict:
    """psycopg sends a query without parameters as a simple query, which may hold several
    statements: "COMMIT; DELETE ..." would end the READ ONLY transaction and write. Prepared,
    every query is one statement, or the server refuses it."""
    return {"prepare_threshold": 0} if driver_url(url).get_driver_name() == "psycopg" else {}


class ReadOnly:
    def __init__(self, url: str | None = None):
        self.url = resolve_url(url)
        self.engine = _engine(self.url)
        self.sqlite = self.engine.dialect.name == "sqlite"

    @contextmanager
    def connection(self):
        try:
            with self.engine.connect() as connection:
                if not self.sqlite:
                    connection.execute(text("SET TRANSACTION READ ONLY"))
                try:
                    yield connection
                finally:
                    connection.rollback()  # never commit: nothing here may change the database
        except SQLAlchemyError as error:
            raise StoreError(f"cannot read {url_shown(self.url)}: {_reason(error)}") from None

    def query(self, sql: str, params: dict | None = None,
              timeout_s: float = QUERY_TIMEOUT_S) -> tuple[list[str], list[tuple]]:
        """A user's SQL: its columns and rows, within `timeout_s`. Errors, a write included, are
        QueryError; Ctrl-C ends the query with Interrupted."""
        with self.connection() as connection, _bounded(connection, self.sqlite, timeout_s) as why:
            try:
                result = connection.execute(text(sql), params or {})
                if not result.returns_rows:
                    return [], []
                return list(result.keys()), [tuple(row) for row in result.fetchall()]
            except SQLAlchemyError as error:
                raise _query_error(_reason(error), why, timeout_s) from None

    def rows(self, sql: str, params: dict | None = None) -> list[dict]:
        columns, rows = self.query(sql, params)
        return [dict(zip(columns, row)) for row in rows]

    def close(self) -> None:
        self.engine.dispose()


def _query_error(reason: str, why: dict, timeout_s: float) -> Exception:
    if why.get("stopped") == "ctrl-c":
        return Interrupted("the query was interrupted (Ctrl-C); nothing was changed")
    if why.get("stopped") == "timeout" or "statement timeout" in reason:
        return QueryError(f"the query ran longer than {timeout_s:g} s and was stopped",
                          "narrow it, or give it longer with --timeout SECONDS")
    lowered = reason.lower()
    if "too many attached databases" in lowered:
        return QueryError("farm sql is read-only: ATTACH and VACUUM are refused (they would "
                          "create or write another file); nothing was changed",
                          "query the results database itself; copy it with sqlite3's .backup")
    if "one statement at a time" in lowered or "multiple commands" in lowered:
        return QueryError(f"farm sql is read-only and runs one statement at a time: {reason}; "
                          "nothing was changed", "run each statement on its own")
    if "readonly" in lowered.replace(" ", "") or "read-only" in lowered or "query_only" in lowered:
        return QueryError(f"farm sql is read-only: {reason}; nothing was changed",
                          "use SELECT (and the views v_results, v_latest, v_devices); results "
                          "are written only by farm submit")
    return QueryError(f"query failed: {reason}",
                      "check the SQL; the README lists the views and columns")


@contextmanager
def _bounded(connection, sqlite: bool, timeout_s: float):
    """Stop the query after `timeout_s`, or at Ctrl-C; yields what stopped it (if anything)."""
    why: dict = {}
    if not sqlite:
        connection.execute(text(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}"))
        yield why
        return
    deadline = time.monotonic() + timeout_s

    def stop() -> int:
        if why.get("stopped") == "ctrl-c":
            return 1
        if time.monotonic() > deadline:
            why["stopped"] = "timeout"
            return 1
        return 0

    raw = connection.connection.driver_connection
    raw.set_progress_handler(stop, _POLL_EVERY)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: why.update(stopped="ctrl-c"))
    try:
        yield why
    finally:
        raw.set_progress_handler(None, 0)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _sqlite_read_only(dbapi_connection, _record) -> None:
    dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()

