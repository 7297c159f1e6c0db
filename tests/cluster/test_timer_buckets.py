"""The timer wheel on the cluster: claims from the buckets (one slot a shard: the buckets, their
tops and the claim sets share its hash tag), take-overs, the move of the keys before buckets."""

from tests.store.test_timer_buckets import *  # noqa: F403 - the same test bodies, on the cluster
from tests.store.test_timers import *  # noqa: F403
