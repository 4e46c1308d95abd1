"""devices and their state (written by the controller, read by farm devices / farm status);
a failed job's class: infrastructure or the job's own

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _previous_view() -> str:
    return context.script.get_revision("0002").module.V_RESULTS


def v_results() -> str:
    """v_results as in 0002, with the failure class added at the end."""
    view = _previous_view().replace(
        "       r.job_s AS job_s, r.window_s AS window_s\n",
        "       r.job_s AS job_s, r.window_s AS window_s, j.failure AS failure\n")
    assert "j.failure" in view
    return view


def upgrade() -> None:
    op.execute("DROP VIEW v_results")
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("last_seen", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("facts_json", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_devices_name"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_devices_job_id"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("failure", sa.String(8), nullable=True))
    op.execute(v_results())


def downgrade() -> None:
    op.execute("DROP VIEW v_results")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("failure")
    op.drop_table("devices")
    op.execute(_previous_view())
