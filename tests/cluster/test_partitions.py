"""The activity partitions on the cluster: saves (a script flushed: ``NOSCRIPT``), moves and listings."""

from tests.store.test_listing_ties import *  # noqa: F403 - the same test bodies, on the cluster
from tests.store.test_partitions import *  # noqa: F403
