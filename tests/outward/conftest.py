"""Fixtures of the outward actions' tests."""

from tests.outward.smtp import smtp  # noqa: F401  (the local mail server fixture)
