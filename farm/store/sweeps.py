"""A sweep's name and the file it belongs to, and removing a sweep (`farm sweeps rm`).

A name is one sweep file's: its jobs are matched to the file's by their content keys, so that
submitting the same file again (edited to add variants, say) extends the sweep. Another file
under the same name would take the old file's results as its own; it is refused instead. A
sweep's `source` is its file's resolved absolute path. A file that moved (nothing is left at
the stored path: a project renamed, a database brought from another machine) is still its
sweep's, and so is a copy with the same bytes (its jobs are the same jobs). Earlier farms
stored the path as typed, relative to a directory they did not record: such a path matches the
file whose path ends with it. The next submit stores the full path.
"""
from __future__ import annotations

from pathlib import Path, PurePath

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from farm.errors import Busy, ConfigError
from farm.store.clock import utcnow
from farm.store.runs import _age, _alive
from farm.store.schema import (Attempt, Claims, Device, Job, Metric, ModelLoad, Prediction,
                               Result, Run, Sweep)


def same_sweep_file(stored: str, submitted: str) -> bool:
    """Whether the file `submitted` (a resolved absolute path) may extend the sweep whose stored
    source is `stored`: the same file, the file moved, or a copy of it."""
    if stored == submitted:
        return True
    if not PurePath(stored).is_absolute():
        parts = tuple(p for p in PurePath(stored).parts if p not in (".", ".."))
        return bool(parts) and PurePath(submitted).parts[-len(parts):] == parts
    old = Path(stored)
    try:
        if not old.exists():
            return True  # moved: no other file holds the name
        return old.resolve() == Path(submitted) or old.read_bytes() == Path(submitted).read_bytes()
    except OSError:  # there, but unreadable (another user's): another file
        return False


def _free_name(db: Session, name: str) -> str:
    taken = set(db.scalars(select(Sweep.name)))
    stem = name[:60]
    return next(f"{stem}-{n}" for n in range(2, len(taken) + 3) if f"{stem}-{n}" not in taken)


class SweepsMixin:
    """Part of Store (farm.store): needs its self._write() and self.session."""

    def check_sweep_file(self, name: str, source: str, shown: str | None = None) -> None:
        """ConfigError (naming `shown`, the file as the user wrote it) where sweep `name` was
        submitted from a file other than `source`; nothing is written either way."""
        with self.session() as db:
            refuse_other_file(db, name, source, shown)

    def remove_sweep(self, name: str) -> int | None:
        """Remove a sweep with its jobs, results, scores, attempts and runs in one transaction;
        Busy while a live run drives it. The number of jobs removed, or None for no such sweep."""
        now = utcnow()
        with self._write() as db:
            db.execute(update(Claims).values(serial=Claims.serial + 1))  # no run starts meanwhile
            row = db.scalar(select(Sweep).where(Sweep.name == name))
            if row is None:
                return None
            runs = db.scalars(select(Run).where(Run.sweep == name, Run.ended_at.is_(None)))
            for run in runs:
                if _alive(run, now):
                    raise Busy(f"sweep {name!r} is being run by farm (pid {run.pid} on "
                               f"{run.host}, heartbeat {_age(run.heartbeat_at, now)})",
                               f"wait for it to end, or stop it with `farm cancel {name}`, "
                               "then remove it")
            jobs = select(Job.id).where(Job.sweep_id == row.id)
            loads = set(db.scalars(select(Result.load_id).where(Result.job_id.in_(jobs))))
            db.execute(update(Device).where(Device.job_id.in_(jobs)).values(job_id=None))
            for table in (Metric, Prediction, Attempt, Result):
                db.execute(delete(table).where(table.job_id.in_(jobs)))
            # a load is one agent's, so its jobs' sweep's; kept while any result still names it
            db.execute(delete(ModelLoad).where(ModelLoad.id.in_(sorted(loads - {None})),
                                               ~exists().where(Result.load_id == ModelLoad.id)))
            mine = select(Run.id).where(Run.sweep == name)
            db.execute(update(Device).where(Device.run_id.in_(mine)).values(run_id=None))
            db.execute(delete(Run).where(Run.sweep == name))
            removed = db.execute(delete(Job).where(Job.sweep_id == row.id)).rowcount
            db.delete(row)
            return removed


def refuse_other_file(db: Session, name: str, source: str, shown: str | None) -> None:
    """ConfigError where sweep `name` is another file's (one line: the file, its `name`, the
    other file, and the fix)."""
    stored = db.scalar(select(Sweep.source).where(Sweep.name == name))
    if stored is None or same_sweep_file(stored, source):
        return
    raise ConfigError(shown or source, "name",
                      f"sweep {name!r} was submitted from another file, {stored}; this file "
                      "would take that sweep's jobs and results as its own",
                      f"rename it (name: {_free_name(db, name)}), or remove the old one with "
                      f"`farm sweeps rm {name}`")
