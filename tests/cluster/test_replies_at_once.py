"""Replies at once on the cluster: a reply's pop and its claim's release are on different nodes."""

from tests.channels.test_replies_at_once import *  # noqa: F403 - the same test bodies, on the cluster
