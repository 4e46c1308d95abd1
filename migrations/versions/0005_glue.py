"""GLUE scores: every metric of a job, its per-example predictions, and with each result why it
has no score (or a caveat), how many examples were scored, and how its texts were tokenized

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_NEW_RESULT_COLUMNS = (
    ("score_note", sa.Text()), ("eval_examples", sa.Integer()), ("eval_s", sa.Float()),
    ("tokens_mean", sa.Float()), ("tokenizer", sa.String(64)))


def _module(revision: str):
    return context.script.get_revision(revision).module


def v_results() -> str:
    """v_results as in 0003, with the score's note and the evaluation's figures added at the end."""
    view = _module("0003").v_results().replace(
        " j.failure AS failure\n",
        " j.failure AS failure,\n"
        "       r.score_note AS score_note, r.eval_examples AS eval_examples,\n"
        "       r.eval_s AS eval_s, r.tokens_mean AS tokens_mean, r.tokenizer AS tokenizer\n")
    assert "r.score_note" in view
    return view


def upgrade() -> None:
    # v_latest reads v_results: both are rebuilt around the new columns.
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    for name, kind in _NEW_RESULT_COLUMNS:
        op.add_column("results", sa.Column(name, kind, nullable=True))
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "name", name="uq_metrics_job_name"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_metrics_job_id"),
    )
    op.create_table(
        "predictions",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("example", sa.Integer(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("prediction", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "example"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_predictions_job_id"),
    )
    op.execute(v_results())
    op.execute(_module("0004").V_LATEST)


def downgrade() -> None:
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    op.drop_table("predictions")
    op.drop_table("metrics")
    with op.batch_alter_table("results") as batch:
        for name, _ in _NEW_RESULT_COLUMNS:
            batch.drop_column(name)
    op.execute(_module("0003").v_results())
    op.execute(_module("0004").V_LATEST)
