"""Conversion between Kommo's Salesbot language and salesbot.flow/1 — pure: documents in, documents and
warnings out.

Only the CLI reads files and the Kommo account; every module here takes and returns documents.
"""
