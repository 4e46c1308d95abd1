"""early exit: the figures of the early_exit method (mean exit layer, its histogram, per-example
latency percentiles, the full-depth latency and the measured speed-up, FLOPs and streamed
layer bytes spent per example)
and every example's exit layer, latency and FLOPs (results.exits_json)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import context, op

from farm.results import v_results_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Written out rather than read from the declaration: a migration adds what it added, forever.
_NEW_RESULT_COLUMNS = (
    ("exit_heads", sa.Text()), ("exit_layers", sa.Integer()), ("exit_layer_mean", sa.Float()),
    ("exit_histogram", sa.Text()), ("exit_batch_layers_mean", sa.Float()),
    ("exit_expected_saving", sa.Float()), ("exit_speedup", sa.Float()),
    ("exit_example_ms", sa.Float()), ("exit_example_p50_ms", sa.Float()),
    ("exit_example_p90_ms", sa.Float()), ("exit_example_p99_ms", sa.Float()),
    ("exit_full_ms", sa.Float()), ("exit_flops_mean", sa.Float()),
    ("exit_bytes_mean", sa.Float()), ("exits_json", sa.Text()))


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
    op.execute(v_results_sql("0008"))
    op.execute(_module("0004").V_LATEST)
