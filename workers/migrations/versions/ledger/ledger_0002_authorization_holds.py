"""Manual capture: authorization holds, and captures that release what they do not take."""

from workers.migrations.steps import run_sql_file

revision = "ledger_0002"
down_revision = "ledger_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
