"""Alembic environment of the admin service (shared logic in flightdeck_common.migrations)."""

from alembic import context

import flightdeck_admin.models  # noqa: F401  (registers every table)
from flightdeck_admin.db import Base
from flightdeck_admin.settings import Settings
from flightdeck_common.migrations import run_env

if not context.config.get_main_option("sqlalchemy.url"):
    context.config.set_main_option("sqlalchemy.url", Settings().database_url.replace("%", "%%"))

run_env(Base.metadata)
