"""The console tests use the API tests' seeded app."""

from tests.api.conftest import api  # noqa: F401
