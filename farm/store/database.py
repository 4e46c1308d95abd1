"""The results database as its one writer holds it (Store): SQLite by default (any SQLAlchemy
URL works), migrated on open.

The controller is the only writer, in short transactions: each write its own, or the writes of
one scheduler turn together (Store.turn: what a turn collected, dispatched and heard, some
milliseconds' worth). A job's outcome and its figures are never split, a crash loses at most the
turn under way (its jobs, still `running`, are requeued by the next run), and readers (farm
status, farm sql, sqlite3) never wait on a sweep.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, create_engine, event, insert, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from farm.errors import StoreError
from farm.results import FINAL, Status, load_row, measured, result_row
from farm.store import (BUSY_TIMEOUT_MS, MIGRATIONS_DIR, SWEEP_RESULTS, _reason, driver_url,
                        resolve_url, url_shown)
from farm.store.clock import from_epoch, utcnow
from farm.store.runs import RunsMixin
from farm.store.schema import Device, Job, Metric, ModelLoad, Prediction, Result, Sweep
from farm.store.sweeps import SweepsMixin, refuse_other_file

# A job's writes (its start, phases and outcome, its device's state), each statement built once.
# SQLAlchemy builds a statement in Python every time one is written out (0.2-0.7 ms, and a job
# makes a dozen); one built once is only bound and run (0.04 ms). That was most of the
# controller's own time per job (bench/scale.py controller). The columns to set are the keys of
# the parameters (SQLAlchemy's SET of an UPDATE); the row is named by a parameter that is no
# column's name.
_JOB = Job.__table__.update().where(Job.__table__.c.id == bindparam("the_job"))
_JOB_STARTED = _JOB.values(attempts=Job.__table__.c.attempts + 1)
_DEVICE = Device.__table__.update().where(Device.__table__.c.name == bindparam("the_device"))
_RESULT_GONE, _METRICS_GONE, _PREDICTIONS_GONE = (
    table.delete().where(table.c.job_id == bindparam("the_job"))
    for table in (Result.__table__, Metric.__table__, Prediction.__table__))
_RESULT, _METRICS, _PREDICTIONS = (table.insert() for table in (
    Result.__table__, Metric.__table__, Prediction.__table__))
_LOAD_ID = select(ModelLoad.__table__.c.id).where(
    ModelLoad.__table__.c.load_key == bindparam("the_key"))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    _switch_to_wal(cursor)  # readers never block the writer
    # With WAL, NORMAL never corrupts; a power cut may lose the last commits, a crash does not.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _switch_to_wal(cursor) -> None:
    """PRAGMA journal_mode=WAL, waiting as long as any other statement would. SQLite does not
    call the busy handler while it changes the journal mode: two farms opening a new file at
    once (one of them mid-migration) made the second fail at once with "database is locked"
    (about one try in two in a loop of 500)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _exclusive_begin(engine) -> None:
    """Transactions on this engine take SQLite's write lock when they begin (pysqlite would
    begin lazily, at the first write, after the migration has read the schema's revision)."""
    @event.listens_for(engine, "connect")
    def _driver_leaves_transactions_to_us(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_exclusive(connection):
        connection.exec_driver_sql("BEGIN EXCLUSIVE")


@dataclass(frozen=True)
class QueuedJob:
    id: int
    key: str
    target: str
    spec: dict  # what the runner needs: model, variant, task, batch_size, seq_len, measure, ...


@dataclass(frozen=True)
class SubmittedSweep:
    id: int
    name: str
    new_jobs: int
    known_jobs: int


class Store(RunsMixin, SweepsMixin):
    def __init__(self, url: str | None = None):
        self.url = resolve_url(url)
        try:
            self.engine = create_engine(driver_url(self.url))
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            self._migrate()
        except SQLAlchemyError as error:
            raise StoreError(f"cannot open database {url_shown(self.url)}: {_reason(error)}",
                             "check --db / FARM_DB and that the file is writable") from None
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self._turn = threading.local()  # the session of this thread's turn, while one is open

    def _migrate(self) -> None:
        """Bring the schema to head in one transaction that holds the database's write lock
        from its start: two farms creating one database at once migrate one after the other,
        and the second finds nothing to do."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        sqlite = self.engine.dialect.name == "sqlite"
        engine = create_engine(self.url, poolclass=NullPool) if sqlite else self.engine
        if sqlite:
            event.listen(engine, "connect", _sqlite_pragmas)
            _exclusive_begin(engine)
        try:
            with engine.begin() as connection:
                if engine.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(7216)"))  # 'farm'
                self._known_revision(connection, config)
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        finally:
            if sqlite:
                engine.dispose()

    def _known_revision(self, connection, config) -> None:
        """A schema that a newer farm migrated past our head: refused, never "upgraded"."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        scripts = ScriptDirectory.from_config(config)
        known = {script.revision for script in scripts.walk_revisions()}
        for revision in MigrationContext.configure(connection).get_current_heads():
            if revision not in known:
                raise StoreError(f"the database at {url_shown(self.url)} was written by a newer "
                                 f"farm (revision {revision})", "upgrade farm")

    def _write(self):
        """A transaction of its own, or, inside this thread's turn, the turn's."""
        db = getattr(self._turn, "db", None)
        return contextlib.nullcontext(db) if db is not None else _Transaction(self.session)

    @contextlib.contextmanager
    def turn(self):
        """Every write this thread makes inside (job_started, job_phase, job_finished,
        device_state, ...) commits in one transaction, or none does: a failing write undoes the
        whole turn and raises StoreError. Other threads (the run's heartbeat) write apart."""
        if getattr(self._turn, "db", None) is not None:  # nested: the outer turn commits
            yield
            return
        with _Transaction(self.session) as db:
            self._turn.db = db
            try:
                yield
            finally:
                self._turn.db = None

    def add_sweep(self, sweep, source: str, inventory, jobs) -> SubmittedSweep:
        """Record a sweep from its file (`source`: farm.store.sweeps) and its jobs in one
        transaction; known jobs are left as they are. ConfigError where another file has the
        sweep's name."""
        now = utcnow()
        with self._write() as db:
            refuse_other_file(db, sweep.name, source, None)
            row = db.scalar(select(Sweep).where(Sweep.name == sweep.name))
            if row is None:
                row = Sweep(name=sweep.name, created_at=now)
                db.add(row)
            row.source, row.updated_at = source, now
            row.spec_json = sweep.model_dump_json()
            row.inventory_json = inventory.model_dump_json()
            db.flush()
            known = set(db.scalars(select(Job.key).where(Job.sweep_id == row.id)))
            fresh = [job for job in jobs if job.key not in known]
            for job in fresh:
                db.add(Job(sweep_id=row.id, key=job.key, target=job.target,
                           model=job.model.name, variant=job.variant.name,
                           variant_spec=job.identity.get("variant_spec") and json.dumps(
                               job.identity["variant_spec"], sort_keys=True),
                           model_path=job.model.path or (job.model.hub and f"hub:{job.model.hub}"),
                           task=job.task, batch_size=job.batch_size, seq_len=job.seq_len,
                           repeat=job.repeat, spec_json=json.dumps(job.runner_spec()),
                           status=Status.QUEUED, attempts=0, created_at=now))
            return SubmittedSweep(row.id, row.name, len(fresh), len(jobs) - len(fresh))

    def runnable_jobs(self, sweep_id: int, keys: set[str]) -> list[QueuedJob]:
        """Jobs of these keys not yet finished. A job left 'running' or 'cancelled' by an
        earlier controller runs again; finished ones never do."""
        with self.session() as db:
            rows = db.scalars(select(Job).where(
                Job.sweep_id == sweep_id, Job.status.not_in(FINAL)).order_by(Job.id))
            return [QueuedJob(r.id, r.key, r.target, json.loads(r.spec_json))
                    for r in rows if r.key in keys]

    def finished_keys(self, sweep_name: str) -> set[str]:
        with self.session() as db:
            return set(db.scalars(select(Job.key).join(Sweep).where(
                Sweep.name == sweep_name, Job.status.in_(FINAL))))

    @contextlib.contextmanager
    def _per_job(self):
        """The connection of _write's transaction, for the writes each job makes (its start,
        phases, outcome, its device's state): Core statements on the connection skip the
        Session's execution and autoflush, which cost as much as the database does (about half
        of the controller's own time per job: bench/scale_run.py)."""
        with self._write() as db:
            yield db.connection()

    def job_started(self, job_id: int, device: str) -> None:
        now = utcnow()
        with self._per_job() as db:
            db.execute(_JOB_STARTED, dict(
                the_job=job_id, status=Status.RUNNING, device=device, started_at=now,
                finished_at=None, phase="queued", error=None, failure=None))
            self._open_attempt(db, job_id, device, self.run_id, now)

    def job_phase(self, job_id: int, phase: str) -> None:
        with self._per_job() as db:
            db.execute(_JOB, dict(the_job=job_id, phase=phase))

    def job_finished(self, job_id: int, outcome: dict, retry: bool = False) -> None:
        """Store a job's outcome and its figures together, in one transaction. With retry, the
        attempt is recorded and the job goes back to the queue."""
        result = outcome.get("result") or {}
        with self._per_job() as db:
            self._close_attempt(db, job_id, outcome, from_epoch(outcome["finished_at"]))
            if retry:
                db.execute(_JOB, dict(the_job=job_id, status=Status.QUEUED, phase=None,
                                      failure=outcome.get("failure"),
                                      error=f"retrying: {outcome.get('error')}"))
                return
            db.execute(_JOB, dict(
                the_job=job_id, status=outcome["status"], error=outcome.get("error"),
                phase=None, failure=outcome.get("failure"), device=outcome["device"],
                started_at=from_epoch(outcome["started_at"]),
                finished_at=from_epoch(outcome["finished_at"])))
            if measured(result):
                # Core statements, not ORM objects: a Result of 120 columns built as an object
                # costs more than the database does
                db.execute(_RESULT_GONE, dict(the_job=job_id))
                db.execute(_RESULT, [dict(
                    job_id=job_id, device=outcome["device"], created_at=utcnow(),
                    load_id=self._load_id(db, outcome["device"], result.get("load")),
                    **result_row(result))])
            self._scores(db, job_id, result)

    @staticmethod
    def _scores(db: Connection, job_id: int, result: dict) -> None:
        """A scored job's metrics and per-example predictions (replacing an earlier run's)."""
        db.execute(_METRICS_GONE, dict(the_job=job_id))
        db.execute(_PREDICTIONS_GONE, dict(the_job=job_id))
        metrics = [{"job_id": job_id, "name": name, "value": value}
                   for name, value in (result.get("metrics") or {}).items()]
        if metrics:
            db.execute(_METRICS, metrics)
        rows = [{"job_id": job_id, "example": i, "label": label, "prediction": guess}
                for i, label, guess in result.get("predictions") or ()]
        if rows:
            db.execute(_PREDICTIONS, rows)

    @staticmethod
    def _load_id(db: Connection, device: str, load: dict | None) -> int | None:
        """The group's model load, stored by the first job that reports it."""
        if not load:
            return None
        known = db.scalar(_LOAD_ID, dict(the_key=load["load_key"]))
        if known is not None:
            return known
        return db.execute(insert(ModelLoad).values(
            load_key=load["load_key"], device=device, created_at=utcnow(),
            model=load["model"]["name"], model_path=load["model"].get("path"),
            variant=load["variant"], **load_row(load))).inserted_primary_key[0]

    _KEEP = object()

    def device_state(self, name: str, kind: str, state: str, *, job_id: int | None = None,
                     error=_KEEP, facts: dict | None = None, seen: bool = True) -> None:
        """Record what a device is doing now. `seen`: it answered just now. An error is kept
        until another one replaces it, so that an idle device still shows why it last failed."""
        now = utcnow()
        values = dict(kind=kind, state=state, job_id=job_id, updated_at=now)
        if seen:
            values["last_seen"] = now
        if error is not Store._KEEP:
            values["last_error"] = error
        if facts is not None:
            values["facts_json"] = json.dumps(facts, sort_keys=True, default=str)
        with self._per_job() as db:
            if not db.execute(_DEVICE, dict(values, the_device=name)).rowcount:
                db.execute(insert(Device).values(name=name, **values))

    def device_seen(self, name: str) -> None:
        """A heartbeat: the device answered the controller just now."""
        with self._per_job() as db:
            db.execute(_DEVICE, dict(the_device=name, last_seen=utcnow()))

    def sweep_id(self, name: str) -> int | None:
        with self.session() as db:
            return db.scalar(select(Sweep.id).where(Sweep.name == name))

    def status_counts(self, sweep_id: int, keys: set[str] | None = None) -> dict[str, int]:
        """How many of a sweep's jobs stand in each status: all of them, or those of `keys`
        (a sweep file's jobs, where the sweep holds others of its earlier versions)."""
        with self.session() as db:
            rows = db.execute(select(Job.key, Job.status).where(Job.sweep_id == sweep_id))
            return dict(Counter(status for key, status in rows if keys is None or key in keys))

    def sweep_results(self, sweep_name: str) -> list[dict]:
        with self.session() as db:
            rows = db.execute(text(SWEEP_RESULTS), {"name": sweep_name})
            return [dict(r._mapping) for r in rows]

    def close(self) -> None:
        self.engine.dispose()


class _Transaction:
    """A session that commits on success and maps database errors into StoreError."""

    def __init__(self, factory):
        self.db: Session = factory()

    def __enter__(self) -> Session:
        return self.db

    def __exit__(self, kind, error, _tb) -> bool:
        try:
            if kind is None:
                self.db.commit()
            else:
                self.db.rollback()
        except SQLAlchemyError as failure:
            self.db.rollback()
            raise StoreError(f"database write failed: {_reason(failure)}") from None
        finally:
            self.db.close()
        if isinstance(error, SQLAlchemyError):
            raise StoreError(f"database write failed: {_reason(error)}") from None
        return False
