"""Payouts: payouts in transit (reserved, pending) and payouts paid, in the chart of accounts."""

from workers.migrations.steps import run_sql_file

revision = "ledger_0003"
down_revision = "ledger_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
