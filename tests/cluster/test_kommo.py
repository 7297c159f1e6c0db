"""Kommo's echo of our own writes (events stored with the note, webhooks recognised), on the cluster."""

from tests.crm_bridge.test_kommo_automations import *  # noqa: F403 - the same test bodies, on the cluster
