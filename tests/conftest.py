"""Shared fixtures, defined in ``tests/support`` and made visible to every test here.

``tests/`` is on ``sys.path`` (pytest puts the directory of this rootdir conftest
there), so tests import their helpers as ``support.<module>``.
"""

from __future__ import annotations

from hypothesis import settings
from support.kafka import broker, new_topic, topic

# No example has a deadline unless its test sets one: the suite runs on a worker a core
# (scripts/test), where a stall of the shared machine is no fault of the code, and the
# tests assert answers, never timings.
settings.register_profile("leopard", deadline=None)
settings.load_profile("leopard")

__all__ = ["broker", "new_topic", "topic"]
