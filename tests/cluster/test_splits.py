"""Split tests against the cluster: counts kept beside the save (another slot than the
conversation's), the splits API, events that flows listen to."""

from tests.server.test_flow_listening import *  # noqa: F403 - the same test bodies, on the cluster
from tests.server.test_splits_api import *  # noqa: F403
