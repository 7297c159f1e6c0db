"""Processes (start, actions, lists, events, batch jobs, hostile input) on the cluster."""

from tests.server.test_process_flows import *  # noqa: F403 - the same test bodies, on the cluster
