"""compression methods: Kronecker factorization, FFN pruning and magnitude masks
(agents/methods/kronecker.py, prune_ffn.py, magnitude.py) add their figures as columns, and every
result counts its nonzero parameters

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import context, op

from farm.results import v_results_sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _big():
    """Counts past 2**31 are BIGINT on PostgreSQL; SQLite's INTEGER already holds 64 bits, and
    its schema stays as it was."""
    return sa.Integer().with_variant(sa.BigInteger(), "postgresql")


# Written out rather than read from the declaration: a migration adds what it added, forever.
_NEW_RESULT_COLUMNS = (
    ("nonzero_params", _big), ("layer_errors", sa.Text), ("kronecker_shapes", sa.Text),
    ("neurons_pruned", sa.Integer), ("sparsity", sa.Float), ("kernel", sa.Text))


def _module(revision: str):
    return context.script.get_revision(revision).module


def upgrade() -> None:
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    for name, kind in _NEW_RESULT_COLUMNS:
        op.add_column("results", sa.Column(name, kind(), nullable=True))
    op.execute(v_results_sql(revision))
    op.execute(_module("0004").V_LATEST)


def downgrade() -> None:
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    with op.batch_alter_table("results") as batch:
        for name, _ in _NEW_RESULT_COLUMNS:
            batch.drop_column(name)
    op.execute(v_results_sql("0012"))
    op.execute(_module("0004").V_LATEST)
