"""Runs, leases, attempts, quarantine and cancel requests: what keeps a farm whole when a
controller dies, a board fails, or two people submit at once.

A run is one controller driving one sweep. It claims its devices in one transaction that first
bumps the single `claims` row, so that claims queue behind each other on any database and two
runs never both see a device free. A run beats its heartbeat every HEARTBEAT_S (farm.store.clock);
one whose heartbeat is older than STALE_S (or whose process is gone from this host) is dead: the
next claim ends it, takes its devices over and requeues the jobs it left running, each with an
attempt that says why.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.orm import Session

from farm.errors import Busy
from farm.results import FINAL, Failure, Status
from farm.store.clock import STALE_S, utcnow
from farm.store.schema import Attempt, Claims, Device, Job, Run, Sweep

# A job's attempt opened and closed, each statement built once (farm.store.database says why).
_A = Attempt.__table__
_ATTEMPTS = select(func.count()).where(_A.c.job_id == bindparam("the_job"))
_ATTEMPT = _A.insert()
_ATTEMPT_ENDED = _A.update().where(
    _A.c.job_id == bindparam("the_job"), _A.c.status == Status.RUNNING,
    _A.c.attempt == select(func.max(_A.c.attempt)).where(
        _A.c.job_id == bindparam("the_job")).scalar_subquery())

HOST = socket.gethostname()


@dataclass(frozen=True)
class DeadRun:
    id: int
    sweep: str
    host: str
    pid: int
    last_heartbeat: datetime
    requeued: int  # jobs it left running, queued again


def _driven(db, sweep: str, now) -> bool:
    """Whether a live run drives `sweep`."""
    runs = db.scalars(select(Run).where(Run.ended_at.is_(None), Run.sweep == sweep))
    return any(_alive(run, now) for run in runs)


def _alive(run: Run, now: datetime) -> bool:
    if (now - run.heartbeat_at).total_seconds() > STALE_S:
        return False
    if run.host == HOST:  # on this host a vanished process needs no waiting for
        try:
            os.kill(run.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return True


def _age(then: datetime, now: datetime) -> str:
    return f"{(now - then).total_seconds():.0f}s ago"


class RunsMixin:
    """Part of Store (farm.store): needs its self._write() and self.session."""
    run_id: int | None = None

    def begin_run(self, sweep: str, devices: dict[str, str]) -> list[DeadRun]:
        """Start a run of `sweep` holding `devices` (name -> kind). Raises Busy, writing nothing,
        if a live run drives this sweep or holds one of these devices; ends dead runs first."""
        now = utcnow()
        with self._write() as db:
            db.execute(update(Claims).values(serial=Claims.serial + 1))  # queue behind others
            live, dead = {}, []
            for run in db.scalars(select(Run).where(Run.ended_at.is_(None))):
                if _alive(run, now):
                    live[run.id] = run
                else:
                    dead.append(self._end_dead(db, run, now))
            for run in live.values():
                if run.sweep == sweep:
                    raise Busy(f"sweep {sweep!r} is already being run by farm (pid {run.pid} on "
                               f"{run.host}, heartbeat {_age(run.heartbeat_at, now)})",
                               f"wait for it, follow it with `farm status`, or stop it with "
                               f"`farm cancel {sweep}`")
            held = db.scalars(select(Device).where(Device.name.in_(devices),
                                                   Device.run_id.in_(live))).all()
            if held:
                run = live[held[0].run_id]
                raise Busy(f"device {held[0].name!r} is in use by sweep {run.sweep!r} (farm pid "
                           f"{run.pid} on {run.host}, heartbeat {_age(run.heartbeat_at, now)})",
                           "wait for that run to end, or leave this device out of the sweep")
            run = Run(sweep=sweep, host=HOST, pid=os.getpid(), started_at=now, heartbeat_at=now)
            db.add(run)
            db.flush()
            for name, kind in devices.items():
                row = db.scalar(select(Device).where(Device.name == name))
                if row is None:
                    db.add(Device(name=name, kind=kind, state="idle", updated_at=now,
                                  run_id=run.id))
                else:
                    row.run_id = run.id
            self.run_id = run.id
        return dead

    def _end_dead(self, db: Session, run: Run, now: datetime) -> DeadRun:
        """End a dead run: release its devices, requeue the jobs it left running."""
        run.ended_at, run.outcome = now, "died"
        db.execute(update(Device).where(Device.run_id == run.id).values(
            run_id=None, state="idle", job_id=None, updated_at=now))
        reason = (f"infrastructure: the controller running this job (pid {run.pid} on {run.host}) "
                  f"stopped; its last heartbeat was at {run.heartbeat_at:%H:%M:%S} UTC")
        stranded = db.scalars(select(Job).join(Sweep).where(
            Sweep.name == run.sweep, Job.status == Status.RUNNING)).all()
        for job in stranded:
            self._close_attempt(db, job.id, {"status": Status.FAILED, "failure": Failure.INFRA,
                                             "error": reason}, now)
            job.status, job.phase, job.error = Status.QUEUED, None, reason
            job.failure = Failure.INFRA
        return DeadRun(run.id, run.sweep, run.host, run.pid, run.heartbeat_at, len(stranded))

    def open_run(self, sweep: str) -> bool:
        """Whether a live run drives this sweep now."""
        now = utcnow()
        with self.session() as db:
            return _driven(db, sweep, now)

    def heartbeat(self) -> None:
        if self.run_id is not None:
            with self._write() as db:
                db.execute(update(Run).where(Run.id == self.run_id).values(heartbeat_at=utcnow()))

    def end_run(self, outcome: str) -> None:
        if self.run_id is None:
            return
        with self._write() as db:
            db.execute(update(Run).where(Run.id == self.run_id).values(
                ended_at=utcnow(), outcome=outcome))
            db.execute(update(Device).where(Device.run_id == self.run_id).values(run_id=None))
        self.run_id = None

    @staticmethod
    def _open_attempt(db: Connection, job_id: int, device: str, run_id: int | None,
                      now: datetime) -> None:
        count = db.scalar(_ATTEMPTS, dict(the_job=job_id)) or 0
        db.execute(_ATTEMPT, [dict(job_id=job_id, attempt=count + 1, run_id=run_id,
                                   device=device, started_at=now, status=Status.RUNNING)])

    @staticmethod
    def _close_attempt(db: Connection | Session, job_id: int, outcome: dict,
                       now: datetime) -> None:
        db.execute(_ATTEMPT_ENDED, dict(the_job=job_id, status=outcome["status"],
                                        failure=outcome.get("failure"),
                                        error=outcome.get("error"), finished_at=now))

    def jobs_ended_now(self) -> int:
        """The jobs this run took to a final end (done, oom, failed, timeout): not those it
        cancelled, nor those it left queued (a finished job never runs again, so a final one
        with an attempt of this run ended in it)."""
        if self.run_id is None:
            return 0
        with self.session() as db:
            return db.scalar(select(func.count(func.distinct(Job.id))).join(
                Attempt, Attempt.job_id == Job.id).where(
                Attempt.run_id == self.run_id, Job.status.in_(FINAL))) or 0

    def infra_attempts(self, job_id: int) -> int:
        with self.session() as db:
            return db.scalar(select(func.count()).where(
                Attempt.job_id == job_id, Attempt.failure == Failure.INFRA)) or 0

    # --- quarantine -----------------------------------------------------------------------
    def quarantine(self, name: str, reason: str) -> None:
        now = utcnow()
        with self._write() as db:
            db.execute(update(Device).where(Device.name == name).values(
                state="quarantined", job_id=None, quarantined_at=now, quarantine_reason=reason,
                last_error=reason, updated_at=now))

    def release(self, name: str, note: str | None = None) -> bool:
        """Take a device out of quarantine; False if it was not in quarantine."""
        with self._write() as db:
            row = db.scalar(select(Device).where(Device.name == name))
            if row is None or row.quarantined_at is None:
                return False
            row.quarantined_at, row.quarantine_reason = None, None
            row.state, row.updated_at = "idle", utcnow()
            if note:
                row.last_error = note
            return True

    def quarantined(self) -> dict[str, str]:
        with self.session() as db:
            return {d.name: d.quarantine_reason or "" for d in db.scalars(
                select(Device).where(Device.quarantined_at.is_not(None)))}

    # --- cancel ---------------------------------------------------------------------------
    def request_cancel(self, sweep: str) -> bool:
        """Ask the run driving `sweep` to cancel; with no live run, cancel its jobs here.
        Returns whether a live run was asked (and will do it)."""
        now = utcnow()
        with self._write() as db:
            row = db.scalar(select(Sweep).where(Sweep.name == sweep))
            if row is None:
                return False
            row.cancel_requested_at = now
            if _driven(db, sweep, now):
                return True
            _cancel_jobs(db, row.id, (Status.QUEUED, Status.RUNNING), "cancelled by `farm cancel`",
                        now)
            return False

    def cancel_requested(self, sweep: str) -> bool:
        """Whether `farm cancel` was run for this sweep since this run started."""
        with self.session() as db:
            return db.scalar(select(func.count()).select_from(Sweep).join(
                Run, Run.sweep == Sweep.name).where(
                Sweep.name == sweep, Run.id == self.run_id,
                Sweep.cancel_requested_at >= Run.started_at)) > 0

    def cancel_queued(self, sweep_id: int, reason: str) -> None:
        with self._write() as db:
            _cancel_jobs(db, sweep_id, (Status.QUEUED,), reason, utcnow())


def _cancel_jobs(db: Session, sweep_id: int, statuses: tuple[Status, ...], reason: str,
                 now: datetime) -> None:
    db.execute(update(Job).where(Job.sweep_id == sweep_id, Job.status.in_(statuses)).values(
        status=Status.CANCELLED, phase=None, error=reason, finished_at=now))
