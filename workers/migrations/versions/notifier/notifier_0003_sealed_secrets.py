"""Webhook signing secrets encrypted at rest: sealed with the configured key, plain text only
for those stored before, until `flowpay secrets rotate` seals them."""

from workers.migrations.steps import run_sql_file

revision = "notifier_0003"
down_revision = "notifier_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
