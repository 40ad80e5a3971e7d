"""The merchant-wide event stream: events in commit order, and a wake-up per merchant."""

from workers.migrations.steps import run_sql_file

revision = "api_0007"
down_revision = "api_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
