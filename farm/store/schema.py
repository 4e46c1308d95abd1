"""The database's tables. Change them only together with a new migration in migrations/."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (CheckConstraint, Column, DateTime, Float, ForeignKey, Index, Integer,
                        String, Table, Text, UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from farm.results import LOAD_FIELDS, RESULT_FIELDS, Status


class Base(DeclarativeBase):
    pass


class Sweep(Base):
    __tablename__ = "sweeps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(Text)  # the sweep file's path when last submitted
    spec_json: Mapped[str] = mapped_column(Text)
    inventory_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime)  # by `farm cancel`
    jobs: Mapped[list[Job]] = relationship(back_populates="sweep")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("sweep_id", "key", name="uq_jobs_sweep_key"),
        CheckConstraint(f"status in {tuple(s.value for s in Status)!r}", name="ck_jobs_status"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_finished_at", "finished_at"),  # readers: the newest (0015)
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id"))
    key: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(64))  # device name or tag from the sweep
    device: Mapped[str | None] = mapped_column(String(64))  # the device that ran it
    model: Mapped[str] = mapped_column(String(64))
    model_path: Mapped[str | None] = mapped_column(Text)
    variant: Mapped[str] = mapped_column(String(32))
    # What the variant is (precision, execution, methods) as JSON; NULL for the named variants
    # of earlier releases, whose name says it (agents.methods.NAMED).
    variant_spec: Mapped[str | None] = mapped_column(Text)
    task: Mapped[str] = mapped_column(String(32))
    batch_size: Mapped[int] = mapped_column(Integer)
    seq_len: Mapped[int] = mapped_column(Integer)
    spec_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=Status.QUEUED)
    phase: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text)
    failure: Mapped[str | None] = mapped_column(String(8))  # 'infra' or 'job', when not done
    # Which measurement of the job this is (sweep `repeats: N`: 1..N, each in a fresh agent).
    repeat: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    sweep: Mapped[Sweep] = relationship(back_populates="jobs")
    result: Mapped[Result | None] = relationship(back_populates="job")


class ModelLoad(Base):
    """One load of a (model, variant) on a device, shared by the jobs of its group; its figures
    are declared in farm.results.LOAD_FIELDS."""
    __table__ = Table(
        "model_loads", Base.metadata,
        Column("id", Integer, primary_key=True),
        Column("load_key", String(32), nullable=False, unique=True),
        Column("device", String(64), nullable=False),
        Column("model", String(64), nullable=False),
        Column("model_path", Text),
        Column("variant", String(32), nullable=False),
        *(field.column() for field in LOAD_FIELDS),
        Column("created_at", DateTime, nullable=False))


# A device's latest board reading of each kind (`farm status`: farm.store.queries.device_rows):
# partial indexes, so that a device that never reports one (power on a container) is found to
# have none at once rather than by reading every result it has.
DEVICE_READINGS = {"ix_results_device_power": "avg_power_mw",
                   "ix_results_device_board_ram": "board_ram_peak_mb",
                   "ix_results_device_temp": "temp_c_end",
                   "ix_results_device_throttled": "throttled"}


def _latest_reading(name: str, column: str) -> Index:
    where = text(f"{column} IS NOT NULL")
    return Index(name, "device", "id", sqlite_where=where, postgresql_where=where)


class Result(Base):
    """One row per job that produced figures (done, and oom/timeout with the memory seen); its
    figures are declared in farm.results.RESULT_FIELDS."""
    __table__ = Table(
        "results", Base.metadata,
        Column("id", Integer, primary_key=True),
        Column("job_id", ForeignKey("jobs.id"), nullable=False, unique=True),
        Column("device", String(64), nullable=False),
        Column("load_id", ForeignKey("model_loads.id")),
        *(field.column() for field in RESULT_FIELDS),
        Column("created_at", DateTime, nullable=False),
        *(_latest_reading(name, column) for name, column in DEVICE_READINGS.items()))
    job: Mapped[Job] = relationship(back_populates="result")
    load: Mapped[ModelLoad | None] = relationship()


DEVICE_STATES = ("idle", "busy", "offline", "refused", "error", "quarantined")


class Device(Base):
    """What the controller last knew of a device: farm devices and farm status read this."""
    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))  # one of DEVICE_STATES
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))  # the job it runs now
    last_seen: Mapped[datetime | None] = mapped_column(DateTime)  # last time it answered
    last_error: Mapped[str | None] = mapped_column(Text)
    facts_json: Mapped[str | None] = mapped_column(Text)  # what prepare() read off the device
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    run_id: Mapped[int | None] = mapped_column(Integer)  # the run that holds it now (its lease)
    quarantined_at: Mapped[datetime | None] = mapped_column(DateTime)
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    job: Mapped[Job | None] = relationship()


class Run(Base):
    """One controller driving one sweep: `farm submit` or `farm resume`. Its heartbeat says it is
    alive; a run whose heartbeat stopped died (kill -9, power cut) and its jobs are requeued."""
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_open", "ended_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime)
    # finished, interrupted, cancelled, died, refused (another farm held a device)
    outcome: Mapped[str | None] = mapped_column(String(16))


class Attempt(Base):
    """Every time a job was started, and how that attempt ended (jobs holds the last one)."""
    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_job", "job_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    attempt: Mapped[int] = mapped_column(Integer)  # 1, 2, ...
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    device: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16))
    failure: Mapped[str | None] = mapped_column(String(8))
    error: Mapped[str | None] = mapped_column(Text)


class Claims(Base):
    """A single row every device claim updates first, so that claims never interleave."""
    __tablename__ = "claims"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[int] = mapped_column(Integer)



class Metric(Base):
    """Every metric of a scored job (results.metric/score hold the task's main one)."""
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_metrics_job_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    name: Mapped[str] = mapped_column(String(32))  # accuracy, f1, mcc, pearson, spearman
    value: Mapped[float | None] = mapped_column(Float)  # None where undefined


class Prediction(Base):
    """One evaluation example of a scored job: its gold label and the model's prediction (label
    names, or numbers as text for STS-B), so that a metric can be recomputed from SQL."""
    __tablename__ = "predictions"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    example: Mapped[int] = mapped_column(Integer, primary_key=True)  # index in file order
    label: Mapped[str] = mapped_column(Text)
    prediction: Mapped[str] = mapped_column(Text)
