"""Helpers the tests import (fixtures live in tests/conftest.py): one module per concern."""
