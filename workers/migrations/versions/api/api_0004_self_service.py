"""Merchant self-service: webhook endpoints and the event record."""

from workers.migrations.steps import run_sql_file

revision = "api_0004"
down_revision = "api_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
