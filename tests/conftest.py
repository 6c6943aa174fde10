"""Shared fixtures, defined in ``tests/support`` and made visible to every test here.

``tests/`` is on ``sys.path`` (pytest puts the directory of this rootdir conftest
there), so tests import their helpers as ``support.<module>``.
"""

from __future__ import annotations

from support.kafka import broker, new_topic, topic

__all__ = ["broker", "new_topic", "topic"]
