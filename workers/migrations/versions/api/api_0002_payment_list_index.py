"""The payment list pages by an index in (merchant_id, id)."""

from workers.migrations.steps import run_sql_file

revision = "api_0002"
down_revision = "api_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__)
