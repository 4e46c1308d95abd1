"""valid percentiles: each percentile's distribution-free 95% interval from order statistics
(p50/p90/p95/p99 low and high), and why a percentile is NULL when too few calls were timed

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import context, op

from farm.results import v_results_sql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Written out rather than read from the declaration: a migration adds what it added, forever.
_NEW_RESULT_COLUMNS = tuple((f"p{q}_{end}_ms", sa.Float()) for q in (50, 90, 95, 99)
                            for end in ("low", "high")) + (("percentile_note", sa.Text()),)


def _module(revision: str):
    return context.script.get_revision(revision).module


def upgrade() -> None:
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    for name, kind in _NEW_RESULT_COLUMNS:
        op.add_column("results", sa.Column(name, kind, nullable=True))
    op.execute(v_results_sql(revision))
    op.execute(_module("0004").V_LATEST)


def downgrade() -> None:
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    with op.batch_alter_table("results") as batch:
        for name, _ in _NEW_RESULT_COLUMNS:
            batch.drop_column(name)
    op.execute(v_results_sql("0010"))
    op.execute(_module("0004").V_LATEST)
