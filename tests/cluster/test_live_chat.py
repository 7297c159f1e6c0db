"""Live chat against the cluster: the server's API and smoke tests, ordering, dedupe, recovery."""

from tests.runtime.test_conversations import *  # noqa: F403 - the same test bodies, on the cluster
from tests.server.test_api import *  # noqa: F403
from tests.server.test_smoke import *  # noqa: F403
