"""The /live dashboard's API: listings, filters, search, the stream, on the cluster."""

from tests.server.test_dashboard_api import *  # noqa: F403 - the same test bodies, on the cluster
