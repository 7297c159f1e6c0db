"""The customers list, a customer's conversations and the live orders stream on the cluster."""

from tests.server.test_customers_api import *  # noqa: F403 - the same test bodies, on the cluster
