"""Fixtures for the tests of lompo_core.nodes; the helpers live in nodekit.py (importable)."""

from nodekit import kit, policy_dir, sim, ts  # noqa: F401  (pytest fixtures)
