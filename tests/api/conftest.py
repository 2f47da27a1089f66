"""The shared `world` fixture and helpers live in tests/world.py; re-exported for the API tests."""

from tests.integration.webhook_helpers import receiver  # noqa: F401  (a recording webhook receiver: a fixture)
from tests.world import BLOCK, FAR_OUTSIDE, INSIDE, World, fix, register, world

__all__ = ["BLOCK", "FAR_OUTSIDE", "INSIDE", "World", "fix", "register", "world"]
