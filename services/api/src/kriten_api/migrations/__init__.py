"""The api service's Alembic migrations; run them with `kriten_api.migrate.upgrade_database`."""
