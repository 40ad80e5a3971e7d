"""Payouts in transit at the gateway (Stripe pays days later); manual payments told apart."""

from workers.migrations.steps import run_sql_file

revision = "processor_0008"
down_revision = "processor_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
