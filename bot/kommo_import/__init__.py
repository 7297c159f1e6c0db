"""Conversion between Kommo's Salesbot language and salesbot.flow/1 — pure: documents in, documents and
warnings out.

Only the CLI (bot/cli.py) reads files and the account; everything here works on parsed JSON, so the
same code serves the command line, tests and, later, an upload endpoint.
"""
