"""read-side views: v_latest (the newest done result per configuration and device) and
v_devices (each device's state beside its job counts)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

V_LATEST = """
CREATE VIEW v_latest AS
SELECT v.* FROM v_results v
WHERE v.status = 'done' AND NOT EXISTS (
    SELECT 1 FROM v_results w
    WHERE w.status = 'done' AND w.model = v.model AND w.variant = v.variant AND w.task = v.task
      AND w.batch_size = v.batch_size AND w.seq_len = v.seq_len AND w.device = v.device
      AND (w.finished_at > v.finished_at OR (w.finished_at = v.finished_at AND w.job_key > v.job_key)))
"""

V_DEVICES = """
CREATE VIEW v_devices AS
SELECT n.name AS device, d.kind AS kind, d.state AS state, d.last_seen AS last_seen,
       d.last_error AS last_error,
       (SELECT COUNT(*) FROM jobs j WHERE j.device = n.name AND j.status = 'done') AS done,
       (SELECT COUNT(*) FROM jobs j WHERE j.device = n.name AND j.status = 'oom') AS oom,
       (SELECT COUNT(*) FROM jobs j WHERE j.device = n.name AND j.status = 'timeout') AS timeout,
       (SELECT COUNT(*) FROM jobs j WHERE j.device = n.name AND j.status = 'failed') AS failed,
       (SELECT COUNT(*) FROM jobs j WHERE j.device = n.name AND j.failure = 'infra') AS infra_failures,
       (SELECT MAX(j.finished_at) FROM jobs j WHERE j.device = n.name) AS last_finished
FROM (SELECT name FROM devices UNION SELECT device FROM jobs WHERE device IS NOT NULL) n
LEFT JOIN devices d ON d.name = n.name
"""


def upgrade() -> None:
    op.execute(V_LATEST)
    op.execute(V_DEVICES)


def downgrade() -> None:
    op.execute("DROP VIEW v_devices")
    op.execute("DROP VIEW v_latest")
