"""Browsers: each payment's client secret, each merchant's allowed origins (CORS)."""

from workers.migrations.steps import run_sql_file

revision = "api_0008"
down_revision = "api_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
