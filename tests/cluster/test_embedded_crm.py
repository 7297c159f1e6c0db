"""The embedded CRM (records, indexes, notes, flow commands) on the cluster."""

from tests.crm_bridge.test_embedded_api import *  # noqa: F403 - the same test bodies, on the cluster
from tests.crm_bridge.test_id_sets import *  # noqa: F403 - the id sets' buckets, in the slot {crm}
from tests.crm_bridge.test_list_buckets import *  # noqa: F403 - the old lists' move into buckets (no script)
from tests.crm_bridge.test_open_lead import *  # noqa: F403 - one lead for callers at once (SET NX claim)
from tests.crm_bridge.test_recent_buckets import *  # noqa: F403 - the recency buckets: listings, the move (scripts)
from tests.crm_bridge.test_record_buckets import *  # noqa: F403 - the records' move into buckets (no script)
