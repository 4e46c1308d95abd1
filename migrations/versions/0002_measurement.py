"""model loads recorded once per group; CUDA peak, energy, FLOPs method, agent busy time

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Counts past 2**31 are BIGINT on PostgreSQL; SQLite's INTEGER already holds 64 bits, and its
# schema stays as it was.
_BIG = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

# v_results keeps every column of 0001 (names other tools rely on) and adds new ones at the end.
V_RESULTS = """
CREATE VIEW v_results AS
SELECT s.name AS sweep, j.key AS job_key, j.device AS device, j.target AS target,
       j.model AS model, j.variant AS variant, j.task AS task,
       j.batch_size AS batch_size, j.seq_len AS seq_len,
       j.status AS status, j.error AS error, j.attempts AS attempts,
       j.started_at AS started_at, j.finished_at AS finished_at,
       r.p50_ms AS p50_ms, r.p90_ms AS p90_ms, r.p95_ms AS p95_ms, r.p99_ms AS p99_ms,
       r.mean_ms AS mean_ms, r.stdev_ms AS stdev_ms, r.iters AS iters,
       r.per_sample_ms AS per_sample_ms, r.throughput AS throughput,
       r.peak_mem_mb AS peak_mem_mb, r.container_peak_mb AS container_peak_mb,
       r.process_peak_mb AS process_peak_mb, r.memory_limit_mb AS memory_limit_mb,
       l.load_s AS load_s, r.flops AS flops, r.params AS params, r.energy_mj AS energy_mj,
       r.metric AS metric, r.score AS score,
       r.cuda_peak_mb AS cuda_peak_mb, r.load_id AS load_id, l.load_peak_mb AS load_peak_mb,
       l.load_container_peak_mb AS load_container_peak_mb, r.flops_method AS flops_method,
       r.avg_power_mw AS avg_power_mw, r.idle_power_mw AS idle_power_mw,
       r.energy_source AS energy_source, r.board_ram_peak_mb AS board_ram_peak_mb,
       r.job_s AS job_s, r.window_s AS window_s
FROM jobs j
JOIN sweeps s ON s.id = j.sweep_id
LEFT JOIN results r ON r.job_id = j.id
LEFT JOIN model_loads l ON l.id = r.load_id
"""

def upgrade() -> None:
    op.execute("DROP VIEW v_results")
    op.create_table(
        "model_loads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("load_key", sa.String(32), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("model_path", sa.Text(), nullable=True),
        sa.Column("variant", sa.String(32), nullable=False),
        *[sa.Column(c, sa.Float(), nullable=True) for c in (
            "load_s", "load_peak_mb", "load_container_peak_mb", "cuda_load_peak_mb")],
        sa.Column("params", _BIG, nullable=True),
        sa.Column("agent", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("load_key"),
    )
    with op.batch_alter_table("results") as batch:
        batch.drop_column("load_s")
        batch.drop_column("load_peak_mb")
        batch.add_column(sa.Column("cuda_peak_mb", sa.Float(), nullable=True))
        batch.add_column(sa.Column("load_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("job_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("flops_method", sa.String(32), nullable=True))
        batch.add_column(sa.Column("avg_power_mw", sa.Float(), nullable=True))
        batch.add_column(sa.Column("idle_power_mw", sa.Float(), nullable=True))
        batch.add_column(sa.Column("energy_source", sa.String(32), nullable=True))
        batch.add_column(sa.Column("board_ram_peak_mb", sa.Float(), nullable=True))
        batch.create_foreign_key("fk_results_load_id", "model_loads", ["load_id"], ["id"])
    op.execute(V_RESULTS)


def downgrade() -> None:
    op.execute("DROP VIEW v_results")
    with op.batch_alter_table("results") as batch:
        batch.drop_constraint("fk_results_load_id", type_="foreignkey")
        for column in ("cuda_peak_mb", "load_id", "job_s", "flops_method", "avg_power_mw",
                       "idle_power_mw", "energy_source", "board_ram_peak_mb"):
            batch.drop_column(column)
        batch.add_column(sa.Column("load_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("load_peak_mb", sa.Float(), nullable=True))
    op.drop_table("model_loads")
    # 0001's own view, from 0001's module: migrations stay frozen, so no copy is kept here.
    op.execute(context.script.get_revision("0001").module.V_RESULTS)

