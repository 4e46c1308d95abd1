"""container peaks on every cgroup v2 kernel: how each container peak was taken (reset, fresh or
sampled; farm.cgroups.PEAK_METHODS), for a job and for its model's load

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import context, op

from farm.results import v_results_sql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _module(revision: str):
    return context.script.get_revision(revision).module


def upgrade() -> None:
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    op.add_column("results", sa.Column("container_peak_method", sa.String(16), nullable=True))
    op.add_column("model_loads",
                  sa.Column("load_container_peak_method", sa.String(16), nullable=True))
    op.execute(v_results_sql(revision))
    op.execute(_module("0004").V_LATEST)


def downgrade() -> None:
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("container_peak_method")
    with op.batch_alter_table("model_loads") as batch:
        batch.drop_column("load_container_peak_method")
    op.execute(v_results_sql("0009"))
    op.execute(_module("0004").V_LATEST)
