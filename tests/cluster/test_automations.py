"""Automation rules reacting to CRM events, delays through the worker, on the cluster."""

from tests.server.test_automations_acting import *  # noqa: F403 - the same test bodies, on the cluster
