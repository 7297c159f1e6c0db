"""The fake Meta app's identifiers and secrets, and how Meta encodes and signs what it posts."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

VERSION = "v21.0"
TOKEN = "EAAG-test-token"
APP_SECRET = "app_secret_123"
VERIFY_TOKEN = "verify-me"
PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"
DISPLAY_NUMBER = "15550783881"
PAGE_ID = "1122334455"
IG_ID = "17841400000000001"
DAY = 86400.0


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def dumps(payload: Any) -> bytes:
    """Meta's encoding: compact JSON with non-ASCII as \\uXXXX escapes."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()

