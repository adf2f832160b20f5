"""Bring the database schema to the latest Alembic revision.

Run as `python -m db.migrate` by the Procfile's release phase and by `make run`.
"""

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(revision: str = "head") -> None:
    command.upgrade(alembic_config(), revision)


if __name__ == "__main__":
    upgrade()
