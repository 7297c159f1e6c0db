"""The catalogue and orders on the cluster: the API, the scripts over the ``{shop}`` slot, the
hostile input, the order events reaching automations and flows' goals and their outbox."""

from tests.shop.conftest import api, shop_server  # noqa: F401 - the shop tests' fixtures
from tests.shop.test_api import *  # noqa: F403 - the same test bodies, on the cluster
from tests.shop.test_events_end_to_end import *  # noqa: F403
from tests.shop.test_hostile import *  # noqa: F403
from tests.shop.test_service import services, test_two_first_orders_at_once_make_one_lead  # noqa: F401
from tests.shop.test_unsent import *  # noqa: F403
