"""methods: what a job's variant is (jobs.variant_spec: precision, execution and methods, as JSON),
the figures the built-in methods add to a result (heads pruned, layers factorized and their
reconstruction error), and the figures of any other method as JSON (extra_json); from here on
v_results is written from its declaration (farm/results.py)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import context, op

from farm.results import v_results_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Written out rather than read from the declaration: a migration adds what it added, forever.
_NEW_RESULT_COLUMNS = (
    ("heads_pruned", sa.Integer()), ("factorized_layers", sa.Integer()),
    ("reconstruction_error", sa.Float()), ("extra_json", sa.Text()))


def _module(revision: str):
    return context.script.get_revision(revision).module


def upgrade() -> None:
    # v_latest reads v_results: both are rebuilt around the new columns.
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    for name, kind in _NEW_RESULT_COLUMNS:
        op.add_column("results", sa.Column(name, kind, nullable=True))
    op.add_column("jobs", sa.Column("variant_spec", sa.Text(), nullable=True))
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
        batch.drop_column("variant_spec")
    op.execute(_module("0004").V_DEVICES)
    op.execute(_module("0007").v_results())
    op.execute(_module("0004").V_LATEST)
