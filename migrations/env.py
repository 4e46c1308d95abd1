"""Alembic environment: farm passes its own connection; the alembic CLI honours FARM_DB."""
from alembic import context
from sqlalchemy import create_engine

from farm.store import resolve_url
from farm.store.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
elif context.is_offline_mode():
    context.configure(url=resolve_url(None, config.get_main_option("sqlalchemy.url")),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(resolve_url(None, config.get_main_option("sqlalchemy.url")))
    with engine.connect() as conn:
        run_migrations(conn)
