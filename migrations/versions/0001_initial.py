"""sweeps, jobs, results and the v_results view

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Counts past 2**31 are BIGINT on PostgreSQL; SQLite's INTEGER already holds 64 bits, and its
# schema stays as it was.
_BIG = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

JOB_STATUSES = ("queued", "running", "done", "oom", "failed", "timeout", "cancelled")

# v_results: one row per job; outside tools rely on these column names. Extend, never rename.
V_RESULTS = """
CREATE VIEW v_results AS
SELECT s.name AS sweep, j.key AS job_key, j.device AS device, j.target AS target,
       j.model AS model, j.variant AS variant, j.task AS task,
       j.batch_size AS batch_size, j.seq_len AS seq_len,
       j.status AS status, j.error AS error, j.attempts AS attempts,
       j.started_at AS started_at, j.finished_at AS finished_at,
       r.p50_ms AS p50_ms, r.p90_ms AS p90_ms, r.p95_ms AS p95_ms, r.p99_ms AS p99_ms,
       r.mean_ms AS mean_ms, r.stdev_ms AS stdev_ms, r.iters AS iters,
       r.per_sample_ms AS per_sample_ms, r.throughput AS throughput,
       r.peak_mem_mb AS peak_mem_mb, r.container_peak_mb AS container_peak_mb,
       r.process_peak_mb AS process_peak_mb, r.memory_limit_mb AS memory_limit_mb,
       r.load_s AS load_s, r.flops AS flops, r.params AS params, r.energy_mj AS energy_mj,
       r.metric AS metric, r.score AS score
FROM jobs j
JOIN sweeps s ON s.id = j.sweep_id
LEFT JOIN results r ON r.job_id = j.id
"""


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("inventory_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("model_path", sa.Text(), nullable=True),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("seq_len", sa.Integer(), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(f"status in {JOB_STATUSES!r}", name="ck_jobs_status"),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sweep_id", "key", name="uq_jobs_sweep_key"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    floats = ["window_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "stdev_ms", "min_ms",
              "max_ms", "per_sample_ms", "throughput", "peak_mem_mb", "container_peak_mb",
              "process_peak_mb", "memory_limit_mb", "load_s", "load_peak_mb"]
    op.create_table(
        "results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("iters", sa.Integer(), nullable=True),
        *[sa.Column(name, sa.Float(), nullable=True) for name in floats],
        sa.Column("flops", _BIG, nullable=True),
        sa.Column("params", _BIG, nullable=True),
        sa.Column("energy_mj", sa.Float(), nullable=True),
        sa.Column("metric", sa.String(32), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("latencies_json", sa.Text(), nullable=True),
        sa.Column("env_json", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id"),
    )
    op.execute(V_RESULTS)


def downgrade() -> None:
    op.execute("DROP VIEW v_results")
    op.drop_table("results")
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("sweeps")
