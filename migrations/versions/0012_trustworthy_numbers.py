"""numbers a reviewer can trust: noise (IQR / median) and the host's interference (load average,
other processes' CPU time on the agent's CPUs), memory apart from the page cache (the job's own
resident peak; anonymous, kernel and file memory charged to the container), clocks and
temperatures over the timed window, and repeats of a job (jobs.repeat, 1 for every job before)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import context, op

from farm.results import v_results_sql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Written out rather than read from the declaration: a migration adds what it added, forever.
_F, _I, _S = sa.Float, sa.Integer, lambda: sa.String(64)
_NEW_RESULT_COLUMNS = (
    ("noise", _F), ("noisy", _I), ("load_avg_1m", _F), ("outside_cpu_s", _F),
    ("outside_cpu_share", _F), ("host_busy", _I), ("cpu_list", _S), ("memory_mb", _F),
    ("anon_mb", _F), ("kernel_mb", _F), ("file_mb", _F), ("cpu_mhz_start", _F),
    ("cpu_mhz_end", _F), ("cpu_mhz_min", _F), ("gpu_mhz_start", _F), ("gpu_mhz_end", _F),
    ("gpu_mhz_min", _F), ("temp_c_start", _F), ("temp_c_end", _F), ("temp_c_max", _F),
    ("throttled", _I), ("clock_source", _S), ("temp_source", _S))


def _module(revision: str):
    return context.script.get_revision(revision).module


def upgrade() -> None:
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    for name, kind in _NEW_RESULT_COLUMNS:
        op.add_column("results", sa.Column(name, kind(), nullable=True))
    op.add_column("jobs", sa.Column("repeat", sa.Integer(), nullable=False, server_default="1"))
    op.execute(v_results_sql(revision))
    op.execute(_module("0004").V_LATEST)


def downgrade() -> None:
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    with op.batch_alter_table("results") as batch:
        for name, _ in _NEW_RESULT_COLUMNS:
            batch.drop_column(name)
    op.execute("DROP VIEW v_devices")  # SQLite rebuilds jobs to drop a column: no view may read it
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("repeat")
    op.execute(_module("0004").V_DEVICES)
    op.execute(v_results_sql("0011"))
    op.execute(_module("0004").V_LATEST)
