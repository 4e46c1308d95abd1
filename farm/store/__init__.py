"""The results database. A reader needs only this module (URLs, the shared SQL) and
farm.store.readonly; the writer, `Store` (farm.store.database), loads SQLAlchemy's ORM and the
schema, a quarter of a second that every `farm status`, `farm table` or `farm compare` would
otherwise spend first: it is imported when first named.
"""
from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

# What `from farm.store import ...` finds in farm.store.database and farm.store.sweeps.
_WRITER = {"Store": "database", "QueuedJob": "database", "SubmittedSweep": "database",
           "refuse_other_file": "sweeps", "same_sweep_file": "sweeps"}

DEFAULT_DB = "farm.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"
BUSY_TIMEOUT_MS = 30_000


def resolve_url(value: str | None, default: str = DEFAULT_DB) -> str:
    """--db, else FARM_DB, else ./farm.db. A value with '://' is a URL; anything else a path."""
    value = value or os.environ.get("FARM_DB") or default
    if "://" in value:
        return value
    # Built, not formatted: a path's '?', '#' and '%' are quoted, so that none of them is read
    # as the start of the URL's query (which would cut the path there).
    path = str(Path(value).expanduser().resolve())
    return URL.create("sqlite", database=path).render_as_string(hide_password=False)


def driver_url(url: str) -> URL:
    """A URL with its driver named: a bare postgresql:// is psycopg 3's, the driver farm
    installs (SQLAlchemy before 2.1 would look for psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


# A sweep's rows in the order every table of them shows (submit's, farm table, report, export):
# every v_results column ("*"), or those a reader names
SWEEP_RESULTS_OF = ("SELECT {} FROM v_results WHERE sweep = :name "
                    "ORDER BY model, variant, task, batch_size, seq_len, device")
SWEEP_RESULTS = SWEEP_RESULTS_OF.format("*")


def url_shown(url: str) -> str:
    """A URL as a person wrote it: an SQLite file's path, or the URL without its password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return parsed.database
    return parsed.render_as_string(hide_password=True)


def _reason(error: SQLAlchemyError) -> str:
    return str(getattr(error, "orig", None) or error).splitlines()[0]


def __getattr__(name: str):
    if name in _WRITER:
        import importlib

        return getattr(importlib.import_module(f"farm.store.{_WRITER[name]}"), name)
    raise AttributeError(f"module 'farm.store' has no attribute {name!r}")
