"""Payments waiting for their customer (requires_action); attempts of kind cancel and report."""

from workers.migrations.steps import run_sql_file

revision = "processor_0005"
down_revision = "processor_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
