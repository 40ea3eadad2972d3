"""Fixtures for the data tests; the bag writers live in bagfactory.py (importable by tests)."""

from bagfactory import collect_bags, make_bag  # noqa: F401  (pytest fixtures)
