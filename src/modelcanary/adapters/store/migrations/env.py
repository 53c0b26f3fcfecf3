"""Alembic's entry point for modelcanary's store. It never opens its own connection: the store
hands it one, already inside the transaction that runs the whole upgrade (see ``sql.migrate``)."""

from alembic import context

context.configure(connection=context.config.attributes["connection"], render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
