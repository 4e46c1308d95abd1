"""readers at scale: a device's latest board reading of each kind (`farm status`) found from
partial indexes on results (device, id) where the reading is not NULL, rather than by reading
every result the device has (1 s at 100,000 results, for devices that report no power)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Written out rather than read from the declaration: a migration adds what it added, forever.
_READINGS = (("ix_results_device_power", "avg_power_mw"),
             ("ix_results_device_board_ram", "board_ram_peak_mb"),
             ("ix_results_device_temp", "temp_c_end"),
             ("ix_results_device_throttled", "throttled"))


def upgrade() -> None:
    for name, column in _READINGS:
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "results", ["device", "id"], sqlite_where=where,
                        postgresql_where=where)


def downgrade() -> None:
    for name, _ in _READINGS:
        op.drop_index(name, table_name="results")
