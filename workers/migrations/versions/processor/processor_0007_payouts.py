"""Payouts the processor sent through the gateway, with their outcomes."""

from workers.migrations.steps import run_sql_file

revision = "processor_0007"
down_revision = "processor_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
