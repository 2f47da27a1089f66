"""Fixtures shared by the integration tests."""

from tests.integration.webhook_helpers import http, orgs, receiver  # noqa: F401  (fixtures)
