"""reliability: controller runs with heartbeats (a dead one is noticed, its jobs requeued), device
leases (no two runs drive one device), every attempt of a job with its outcome, quarantined
devices, and cancel requests

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_runs_open", "runs", ["ended_at"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("device", sa.String(64), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure", sa.String(8), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_attempts_job_id"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_attempts_run_id"),
    )
    op.create_index("ix_attempts_job", "attempts", ["job_id"])
    # One row that every claim of devices updates first: claims queue behind each other on any
    # database (SQLite's write lock, PostgreSQL's row lock), so two runs never both see a device free.
    op.create_table("claims", sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("serial", sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint("id"))
    op.execute("INSERT INTO claims (id, serial) VALUES (1, 0)")
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("run_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("quarantined_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("quarantine_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("cancel_requested_at")
    with op.batch_alter_table("devices") as batch:
        for column in ("quarantine_reason", "quarantined_at", "run_id"):
            batch.drop_column(column)
    op.drop_table("claims")
    op.drop_index("ix_attempts_job", "attempts")
    op.drop_table("attempts")
    op.drop_index("ix_runs_open", "runs")
    op.drop_table("runs")
