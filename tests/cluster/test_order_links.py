"""Quick-order links on the cluster: the links' hash per customer (one slot), the API, the order
page placing orders over the ``{shop}`` slot, and the flow action end to end."""

from tests.runtime.test_orderlinks import *  # noqa: F403 - the same test bodies, on the cluster
from tests.server.test_order_links import *  # noqa: F403
