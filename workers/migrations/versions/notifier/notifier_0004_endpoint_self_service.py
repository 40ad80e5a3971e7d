"""Endpoints managed by merchants through the API: the events each wants, several secrets at
once (rotation), disabled by their merchant or deleted."""

from workers.migrations.steps import run_sql_file

revision = "notifier_0004"
down_revision = "notifier_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
