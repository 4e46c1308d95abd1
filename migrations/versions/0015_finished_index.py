"""readers at scale: jobs by the time they finished, so that `farm status` finds the newest
results and the sweeps touched in the last day from an index rather than by reading every job
(0.15 and 0.25 s at 100,000 jobs)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
