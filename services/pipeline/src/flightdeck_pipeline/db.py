"""Declarative base of the pipeline service's tables."""

from sqlalchemy.orm import DeclarativeBase

from flightdeck_common.db import new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()
