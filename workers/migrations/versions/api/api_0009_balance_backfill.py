"""Payouts' balance filled in for merchants paid before it: api.balances from their payments."""

from workers.migrations.steps import run_sql_file

revision = "api_0009"
down_revision = "api_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
