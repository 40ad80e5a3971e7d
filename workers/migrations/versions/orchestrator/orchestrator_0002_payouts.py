"""Payouts are sagas too: the saga type constraint admits them."""

from workers.migrations.steps import run_sql_file

revision = "orchestrator_0002"
down_revision = "orchestrator_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
