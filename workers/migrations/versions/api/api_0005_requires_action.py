"""Payments waiting for their customer: the status requires_action and next_action."""

from workers.migrations.steps import run_sql_file

revision = "api_0005"
down_revision = "api_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
