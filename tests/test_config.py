"""The configuration's sections are validated by their own models, built when a section is given
(``bot/config.py``, ``DEFERRED``; issue 14: startup): every mistake is still reported at once with
its full location, and a section left out reads exactly as validating it empty would give."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("embedded_crm", "smtp", "actions", "meta_conversions", "crm", "limits", "events", "automations", "shop")


def test_every_mistake_in_every_section_is_reported_at_once_with_its_location() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={}, overrides={
            "port": "abc",
            "tokens": [{"token": "t", "role": "admin"}, {"token": "u", "role": "owner"}],
            "accounts": {"tg": {"channel": "telegram"}, "wa": {"credentials": {}}},
            "smtp": {"host": "mail", "port": "x"},
            "limits": {"trusted_proxies": ["nowhere"], "messages_per_ip": {"per_minute": 0, "burst": 0}},
            "crm": {"backend": "kommo"},
            "shop": 5,
            "bogus": 1,
        })
    assert str(caught.value) == (
        "invalid configuration: port: Input should be a valid integer, unable to parse string as an integer; "
        "tokens.1.role: Input should be 'admin', 'operator' or 'support'; "
        "accounts.wa.channel: Field required; "
        "smtp.port: Input should be a valid integer, unable to parse string as an integer; "
        "crm: Value error, the kommo backend needs base_url and token; "
        "limits.trusted_proxies: Value error, 'nowhere' is not an IP address or network; "
        "limits.messages_per_ip.per_minute: Input should be greater than 0; "
        "limits.messages_per_ip.burst: Input should be greater than or equal to 1; "
        "shop: Input should be a valid dictionary or instance of ShopConfig; "
        "bogus: Extra inputs are not permitted")


def test_a_section_left_out_reads_as_the_section_given_empty() -> None:
    left_out = load_config(None, env={})
    given_empty = load_config(None, env={}, overrides={name: {} for name in SECTIONS})
    assert left_out == given_empty
    assert left_out.model_dump_json() == given_empty.model_dump_json()  # types too: 30.0 per minute, not 30
    assert isinstance(left_out.limits.messages_per_ip.per_minute, float)


def test_sections_given_are_validated_into_their_models() -> None:
    config = load_config(None, env={}, overrides={
        "crm": {"backend": "kommo", "base_url": "https://acme.kommo.com", "token": "tok"},
        "limits": {"messages_per_ip": {"per_minute": 5, "burst": 2}},
        "tokens": [{"token": "t", "role": "operator"}],
    })
    assert config.crm.token is not None and config.crm.token.get_secret_value() == "tok"
    assert config.limits.messages_per_ip.per_minute == 5.0 and config.limits.messages_per_ip.burst == 2
    assert config.tokens[0].role == "operator"
    assert Config.model_validate(config.model_dump()) == config  # a dump reads back as itself


def test_a_start_builds_the_validators_of_the_sections_it_is_given_only() -> None:
    program = (
        "import json; from bot import config as c\n"
        "c.load_config(None, env={}, overrides={'smtp': {'host': 'mail'}})\n"
        "print(json.dumps(sorted(n for n, m in vars(c).items() if isinstance(m, type) and issubclass(m, c._Frozen)"
        " and m.__pydantic_complete__)))\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == ["Config", "SmtpConfig"]


def test_the_json_schema_describes_every_section() -> None:
    schema = Config.model_json_schema()
    assert schema["properties"]["smtp"]["properties"]["port"]["default"] == 587
    assert schema["properties"]["tokens"]["items"]["properties"]["role"]["enum"] == ["admin", "operator", "support"]
    assert schema["properties"]["limits"]["default"]["messages_per_ip"] == {"per_minute": 300.0, "burst": 60}
