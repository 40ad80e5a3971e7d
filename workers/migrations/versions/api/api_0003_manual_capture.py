"""Payments authorized now and captured or canceled later: capture method, statuses, amounts."""

from workers.migrations.steps import run_sql_file

revision = "api_0003"
down_revision = "api_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
