"""The audit chain's head (its length and last hash), kept beside the chain and moved with every
append, so that events cut off the end show too. Initialised from the events already there.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.execute(
        "INSERT INTO audit_head (name, count, hash) SELECT 'audit', count(*), "
        "COALESCE((SELECT hash FROM audit ORDER BY id DESC LIMIT 1), '" + "0" * 64 + "') FROM audit"
    )
