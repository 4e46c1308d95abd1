"""Reading the results database without any way to change it (`farm sql`, `farm status`,
tables, reports, exports).

SQLite is opened read-only by the driver (a `mode=ro` URI) and with `PRAGMA query_only`, so a
write statement fails inside SQLite itself and changes nothing; other databases run every query
in a READ ONLY transaction that is rolled back. Nothing here migrates: reading never writes.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from farm.errors import QueryError, StoreError
from farm.store import BUSY_TIMEOUT_MS, _reason, resolve_url


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def database_exists(url: str | None) -> bool:
    """False only for an SQLite file that is not there yet (servers are assumed to exist)."""
    path = _sqlite_path(resolve_url(url))
    return path is None or path.exists()


def _read_only_url(url: str) -> str:
    path = _sqlite_path(url)
    if path is None:
        return url
    if not path.exists():
        raise StoreError(f"no database at {path}", "run `farm submit` first, or point --db / "
                         "FARM_DB at the results database")
    # An SQLite URI: '?', '#' and '%' in the path are percent-encoded, for SQLite to decode.
    return URL.create("sqlite", database=f"file:{quote(str(path))}",
                      query={"mode": "ro", "uri": "true"}).render_as_string(hide_password=False)


class ReadOnly:
    def __init__(self, url: str | None = None):
        self.url = resolve_url(url)
        self.engine = create_engine(_read_only_url(self.url))
        self.sqlite = self.engine.dialect.name == "sqlite"
        if self.sqlite:
            event.listen(self.engine, "connect", _sqlite_read_only)

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
            raise StoreError(f"cannot read {self.url}: {_reason(error)}") from None

    def query(self, sql: str, params: dict | None = None) -> tuple[list[str], list[tuple]]:
        """A user's SQL: its columns and rows. Errors, a write included, are QueryError."""
        with self.connection() as connection:
            try:
                result = connection.execute(text(sql), params or {})
            except SQLAlchemyError as error:
                reason = _reason(error)
                if "readonly" in reason.replace(" ", "").lower() or "read-only" in reason.lower() \
                        or "query_only" in reason.lower():
                    raise QueryError(f"farm sql is read-only: {reason}; nothing was changed",
                                     "use SELECT (and the views v_results, v_latest, "
                                     "v_devices); results are written only by farm submit") from None
                raise QueryError(f"query failed: {reason}",
                                 "check the SQL; the README lists the views and columns") from None
            if not result.returns_rows:
                return [], []
            return list(result.keys()), [tuple(row) for row in result]

    def rows(self, sql: str, params: dict | None = None) -> list[dict]:
        columns, rows = self.query(sql, params)
        return [dict(zip(columns, row)) for row in rows]

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_read_only(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()

