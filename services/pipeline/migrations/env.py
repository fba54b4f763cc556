"""Alembic environment of the pipeline service (shared logic in flightdeck_common.migrations)."""

from alembic import context

import flightdeck_pipeline.models  # noqa: F401  (registers every table)
from flightdeck_common.migrations import run_env
from flightdeck_pipeline.db import Base
from flightdeck_pipeline.settings import Settings

if not context.config.get_main_option("sqlalchemy.url"):
    context.config.set_main_option("sqlalchemy.url", Settings().database_url.replace("%", "%%"))

run_env(Base.metadata)
