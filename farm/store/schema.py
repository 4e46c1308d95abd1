"""The database's tables. Change them only together with a new migration in migrations/."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, String,
                        Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JOB_STATUSES = ("queued", "running", "done", "oom", "failed", "timeout", "cancelled")
FINAL_STATUSES = ("done", "oom", "failed", "timeout")


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
        CheckConstraint(f"status in {JOB_STATUSES!r}", name="ck_jobs_status"),
        Index("ix_jobs_status", "status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id"))
    key: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(64))  # device name or tag from the sweep
    device: Mapped[str | None] = mapped_column(String(64))  # the device that ran it
    model: Mapped[str] = mapped_column(String(64))
    model_path: Mapped[str | None] = mapped_column(Text)
    variant: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(32))
    batch_size: Mapped[int] = mapped_column(Integer)
    seq_len: Mapped[int] = mapped_column(Integer)
    spec_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    phase: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text)
    failure: Mapped[str | None] = mapped_column(String(8))  # 'infra' or 'job', when not done
    sweep: Mapped[Sweep] = relationship(back_populates="jobs")
    result: Mapped[Result | None] = relationship(back_populates="job")


class ModelLoad(Base):
    """One load of a (model, variant) on a device, shared by the jobs of its group."""
    __tablename__ = "model_loads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    load_key: Mapped[str] = mapped_column(String(32), unique=True)
    device: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    model_path: Mapped[str | None] = mapped_column(Text)
    variant: Mapped[str] = mapped_column(String(32))
    load_s: Mapped[float | None] = mapped_column(Float)
    load_peak_mb: Mapped[float | None] = mapped_column(Float)  # process peak (VmHWM) after loading
    load_container_peak_mb: Mapped[float | None] = mapped_column(Float)
    cuda_load_peak_mb: Mapped[float | None] = mapped_column(Float)
    params: Mapped[int | None] = mapped_column(Integer)
    agent: Mapped[str | None] = mapped_column(String(32))  # the agent's content hash
    baseline_mb: Mapped[float | None] = mapped_column(Float)  # agent idle: torch imported, no model
    layer_store: Mapped[str | None] = mapped_column(String(32))  # stream: the store's hash
    layer_store_bytes: Mapped[int | None] = mapped_column(Integer)
    layer_store_prepare_s: Mapped[float | None] = mapped_column(Float)  # None: it was cached
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Result(Base):
    """One row per job that produced figures (done, and oom/timeout with the memory seen)."""
    __tablename__ = "results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)
    device: Mapped[str] = mapped_column(String(64))
    iters: Mapped[int | None] = mapped_column(Integer)
    window_s: Mapped[float | None] = mapped_column(Float)
    p50_ms: Mapped[float | None] = mapped_column(Float)
    p90_ms: Mapped[float | None] = mapped_column(Float)
    p95_ms: Mapped[float | None] = mapped_column(Float)
    p99_ms: Mapped[float | None] = mapped_column(Float)
    mean_ms: Mapped[float | None] = mapped_column(Float)
    stdev_ms: Mapped[float | None] = mapped_column(Float)
    min_ms: Mapped[float | None] = mapped_column(Float)
    max_ms: Mapped[float | None] = mapped_column(Float)
    per_sample_ms: Mapped[float | None] = mapped_column(Float)
    throughput: Mapped[float | None] = mapped_column(Float)  # samples per second
    peak_mem_mb: Mapped[float | None] = mapped_column(Float)  # container peak, else process peak
    container_peak_mb: Mapped[float | None] = mapped_column(Float)
    process_peak_mb: Mapped[float | None] = mapped_column(Float)
    memory_limit_mb: Mapped[float | None] = mapped_column(Float)
    cuda_peak_mb: Mapped[float | None] = mapped_column(Float)
    load_id: Mapped[int | None] = mapped_column(ForeignKey("model_loads.id"))
    job_s: Mapped[float | None] = mapped_column(Float)  # the agent's busy time for this job
    flops: Mapped[int | None] = mapped_column(Integer)  # per sample
    flops_method: Mapped[str | None] = mapped_column(String(32))
    params: Mapped[int | None] = mapped_column(Integer)
    energy_mj: Mapped[float | None] = mapped_column(Float)  # per sample, over the timed window
    avg_power_mw: Mapped[float | None] = mapped_column(Float)
    idle_power_mw: Mapped[float | None] = mapped_column(Float)  # read just before the window
    energy_source: Mapped[str | None] = mapped_column(String(32))
    board_ram_peak_mb: Mapped[float | None] = mapped_column(Float)  # tegrastats RAM used
    metric: Mapped[str | None] = mapped_column(String(32))  # the task's main metric
    score: Mapped[float | None] = mapped_column(Float)  # its value; all metrics: table metrics
    score_note: Mapped[str | None] = mapped_column(Text)  # why there is no score, or a caveat
    eval_examples: Mapped[int | None] = mapped_column(Integer)  # examples predicted and scored
    eval_s: Mapped[float | None] = mapped_column(Float)  # time of the pass that predicted them
    tokens_mean: Mapped[float | None] = mapped_column(Float)  # real tokens per example, timed
    tokenizer: Mapped[str | None] = mapped_column(String(64))  # how task texts became ids
    baseline_mb: Mapped[float | None] = mapped_column(Float)  # the agent idle (no model), VmRSS
    # (v_results derives model_memory_mb = process_peak_mb - baseline_mb.)
    # Per forward pass of the timed window: what the kernel read from storage; for streamed
    # variants the layer bytes loaded, the time reading them (any thread) and the time the
    # pass waited for them (v_results: compute_ms = mean_ms - read_wait_ms).
    storage_read_bytes: Mapped[float | None] = mapped_column(Float)
    bytes_read: Mapped[float | None] = mapped_column(Float)
    read_ms: Mapped[float | None] = mapped_column(Float)
    read_wait_ms: Mapped[float | None] = mapped_column(Float)
    logits_json: Mapped[str | None] = mapped_column(Text)  # the first batch's outputs
    latencies_json: Mapped[str | None] = mapped_column(Text)  # every timed call, in ms
    env_json: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
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
    outcome: Mapped[str | None] = mapped_column(String(16))  # finished, interrupted, cancelled, died


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
