"""iterative layer instantiation: with every result the agent's idle baseline and the model
memory above it, the storage it read, and for streamed variants the layer bytes read, the read
and wait time and the compute time per pass; the first batch's logits (variants of one model
compared); with every model load the layer store it read

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Counts past 2**31 are BIGINT on PostgreSQL; SQLite's INTEGER already holds 64 bits, and its
# schema stays as it was.
_BIG = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

_NEW_RESULT_COLUMNS = (
    ("baseline_mb", sa.Float()), ("bytes_read", sa.Float()), ("storage_read_bytes", sa.Float()),
    ("read_ms", sa.Float()), ("read_wait_ms", sa.Float()), ("logits_json", sa.Text()))
_NEW_LOAD_COLUMNS = (
    ("baseline_mb", sa.Float()), ("layer_store", sa.String(32)),
    ("layer_store_bytes", _BIG), ("layer_store_prepare_s", sa.Float()))


def _module(revision: str):
    return context.script.get_revision(revision).module


def v_results() -> str:
    """v_results as in 0005, with the memory and streaming figures added at the end; model
    memory (the process peak above the agent idle) and compute time (a call's mean minus its
    wait for layers) are derived here, not stored."""
    view = _module("0005").v_results().replace(
        " r.tokenizer AS tokenizer\n",
        " r.tokenizer AS tokenizer,\n"
        "       r.baseline_mb AS baseline_mb,\n"
        "       r.process_peak_mb - r.baseline_mb AS model_memory_mb,\n"
        "       r.bytes_read AS bytes_read, r.storage_read_bytes AS storage_read_bytes,\n"
        "       r.read_ms AS read_ms, r.read_wait_ms AS read_wait_ms,\n"
        "       r.mean_ms - r.read_wait_ms AS compute_ms, r.logits_json AS logits_json\n")
    assert "AS model_memory_mb" in view
    return view


def upgrade() -> None:
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    for name, kind in _NEW_RESULT_COLUMNS:
        op.add_column("results", sa.Column(name, kind, nullable=True))
    for name, kind in _NEW_LOAD_COLUMNS:
        op.add_column("model_loads", sa.Column(name, kind, nullable=True))
    op.execute(v_results())
    op.execute(_module("0004").V_LATEST)


def downgrade() -> None:
    op.execute("DROP VIEW v_latest")
    op.execute("DROP VIEW v_results")
    with op.batch_alter_table("results") as batch:
        for name, _ in _NEW_RESULT_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("model_loads") as batch:
        for name, _ in _NEW_LOAD_COLUMNS:
            batch.drop_column(name)
    op.execute(_module("0005").v_results())
    op.execute(_module("0004").V_LATEST)
