"""Analytics against the cluster: the counts beside the save script (their hashes are in other
slots), read back through the API."""

from tests.server.test_analytics_api import *  # noqa: F403 - the same test bodies, on the cluster
