"""Alembic environment of the dcor_depot plugin's migrations.

Its revisions are kept in the table ``dcor_depot_alembic_version``, apart from
CKAN's own; only the plugin's tables (``dcor_depot_*``) are compared.
"""

from __future__ import annotations

import os

from alembic import context
from ckan.model.meta import metadata
from sqlalchemy import engine_from_config, pool

# no logging.config.fileConfig here: it would disable the loggers of the running
# CKAN process (CKAN's own migrations leave logging alone too)
config = context.config

PLUGIN = os.path.basename(os.path.dirname(__file__))
VERSION_TABLE = f"{PLUGIN}_alembic_version"


def include_object(object, name, type_, reflected, compare_to):
    return type_ != "table" or name.startswith(PLUGIN)


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = engine_from_config(
        config.get_section(config.config_ini_section), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
