"""Endpoints disabled with a reason (also automatically, after a run of failures); claims fair
across endpoints."""

from workers.migrations.steps import run_sql_file

revision = "notifier_0002"
down_revision = "notifier_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
