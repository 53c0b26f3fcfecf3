"""Each hand-off stored once, by its key (the stopping recorder's issuer): a hand-off retried
after a write that landed (its answer lost) stored a second copy, which another flush adopted too,
and a label then counted twice.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "handoff_keys",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("handed_at", sa.Float, nullable=False),
    )
