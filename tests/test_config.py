"""The configuration's sections are validated by their own models, built when a section is given
(``bot/config_models.py``, ``DEFERRED``; issue 14: startup): every mistake is still reported at once
with its full location, and a section left out reads exactly as validating it empty would give. A
start given plain values only gets a ``ConfigView`` of the defaults, without pydantic (``bot/config.py``,
``PLAIN``): it reads as the validated ``Config`` would, value by value and type by type."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
from pathlib import Path

import annotated_types
import pytest
from pydantic import BaseModel, ValidationError

from bot import config_models
from bot.config import _ENV_KEYS, PLAIN, PORTS, Config, ConfigError, ConfigView, load_config

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
        "import json; from bot import config_models as c; from bot.config import load_config\n"
        "load_config(None, env={}, overrides={'smtp': {'host': 'mail'}})\n"
        "print(json.dumps(sorted(n for n, m in vars(c).items() if isinstance(m, type) and issubclass(m, c._Frozen)"
        " and m.__pydantic_complete__)))\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == ["Config", "SmtpConfig"]


def test_the_json_schema_describes_every_section() -> None:
    schema = Config.model_json_schema()
    assert schema["properties"]["smtp"]["properties"]["port"]["default"] == 587
    assert schema["properties"]["tokens"]["items"]["properties"]["role"]["enum"] == ["admin", "operator", "support"]
    assert schema["properties"]["limits"]["default"]["messages_per_ip"] == {"per_minute": 300.0, "burst": 60}


#: Starts given plain values only: what the environment, the command line and a file's ``[server]``
#: give most often.
PLAIN_STARTS = (
    ({}, {}),
    ({"SALESBOT_REDIS_URL": "redis://cache:6379/2", "SALESBOT_PORT": "9000", "SALESBOT_DATA_DIR": "/var/lib/sb"}, {}),
    ({"SALESBOT_HOST": "0.0.0.0", "SALESBOT_LOG_LEVEL": "DEBUG", "SALESBOT_FLOWS_DIR": "bots",
      "SALESBOT_AUTOMATIONS_DIR": "rules", "SALESBOT_PUBLIC_URL": "https://bot.example.com", "SALESBOT_PORT": "0"},
     {"host": "::", "port": 8081, "data_dir": "data"}),
)


def _same(view: object, model: BaseModel, where: str = "") -> None:
    """``view`` holds each of ``model``'s values, of the same type (a section: the same, inside)."""
    assert isinstance(view, ConfigView), where
    values = {name: value for name, value in vars(view).items() if not name.startswith("_")}
    assert set(values) == set(type(model).model_fields), where
    for name, value in values.items():
        expected = getattr(model, name)
        if isinstance(expected, BaseModel):
            _same(value, expected, f"{where}{name}.")
        else:
            assert (type(value), value) == (type(expected), expected), f"{where}{name}"


@pytest.mark.parametrize(("env", "overrides"), PLAIN_STARTS)
def test_a_start_given_plain_values_reads_as_the_validated_config(env: dict[str, str],
                                                                    overrides: dict[str, object]) -> None:
    config = load_config(None, env=env, overrides=overrides)
    data = {**{key: env[var] for var, key in _ENV_KEYS.items() if var in env}, **overrides}
    validated = Config.model_validate(data)
    _same(config, validated)
    assert config == validated and validated == config  # anything else is the validated Config's
    assert config != 5 and config != load_config(None, env={}, overrides={"host": "elsewhere"})
    assert config.model_dump() == validated.model_dump() and repr(config) == repr(validated)
    assert config.limits == validated.limits and config.account("tg") is None
    assert config.model_copy(update={"port": 1}).port == 1
    assert pickle.loads(pickle.dumps(config)) == validated and copy.deepcopy(config.limits) == validated.limits
    with pytest.raises(ValidationError, match="frozen"):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        config.limits.enabled = False  # type: ignore[misc]


def test_what_is_not_plain_is_validated_by_the_models() -> None:
    for env in ({"SALESBOT_ADMIN_TOKEN": "t"}, {"SALESBOT_PORT": "08080"}, {"SALESBOT_TIMER_SHARDS": "4"},
                {"SALESBOT_CRM_TOKEN": "t"}):
        assert type(load_config(None, env=env)) is Config, env
    assert type(load_config(None, env={}, overrides={"smtp": {}})) is Config
    assert type(load_config(None, env={}, overrides={"data_dir": Path("d")})) is Config
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"SALESBOT_PORT": "80a", "SALESBOT_REDIS_URL": "redis://r"})
    assert str(caught.value) == ("invalid configuration: port: Input should be a valid integer, unable to parse "
                                 "string as an integer")


def test_the_plain_values_are_those_of_fields_of_their_type_without_constraints() -> None:
    for key, kind in PLAIN.items():
        field = Config.model_fields[key]
        bounds = [annotated_types.Ge(PORTS.start), annotated_types.Le(PORTS.stop - 1)] if key == "port" else []
        assert field.annotation in (kind, kind | None) and field.metadata == bounds, key
    checked = {name for d in Config.__pydantic_decorators__.field_validators.values() for name in d.info.fields}
    assert checked.isdisjoint(PLAIN)  # no validator of its own either


def test_a_file_giving_plain_server_values_reads_as_the_validated_config(tmp_path: Path) -> None:
    path = tmp_path / "salesbot.toml"
    path.write_text('[server]\nhost = "0.0.0.0"\nport = 9000\nredis_url = "redis://r"\n')
    config = load_config(path, env={})
    _same(config, Config.model_validate({"host": "0.0.0.0", "port": 9000, "redis_url": "redis://r"}))
    path.write_text('[server]\nport = 9000.0\n')  # not digits: the models say what it is
    assert type(load_config(path, env={})) is Config


def test_the_plain_defaults_are_those_the_models_give() -> None:
    assert config_models.defaults_source() == (ROOT / "bot" / "config_defaults.py").read_text(), \
        "run: python -m bot.config_models > bot/config_defaults.py"


class _Text(str):
    """A str subclass (an enum member, a caller's own type): validation gives a plain ``str``."""


#: Values a plain key may be given in: digits in other scripts and forms ``int()`` takes, blanks,
#: a NUL, a lone surrogate (undecodable bytes in the environment), a ``~``, mixed case, a str subclass:
#: a model setting or validator that strips, lowers, expands or refuses one shows here.
TRICKY = ("", " ", " 80", "80 ", "+80", "-1", "08080", "0", "1_000", "８０", "٨٠", "1" * 18, "1" * 19, "a\x00b",
          "x\udc80y", "~/x", " x ", "x\n", "é", "Ab", _Text("80"), _Text("h"), 80, -5, True, 8080.0, 10**30)


@pytest.mark.parametrize("key", sorted(PLAIN))
def test_each_plain_key_in_any_form_reads_or_fails_as_the_validated_config(key: str) -> None:
    for value in TRICKY:
        try:
            expected: object = getattr(Config.model_validate({key: value}), key)
        except ValidationError:
            with pytest.raises(ConfigError):
                load_config(None, env={}, overrides={key: value})
            continue
        got = getattr(load_config(None, env={}, overrides={key: value}), key)
        assert (type(got), got) == (type(expected), expected), (key, value)



def test_a_plain_start_prints_as_the_validated_config() -> None:
    config, validated = load_config(None, env={}, overrides={"port": 9000}), Config.model_validate({"port": 9000})
    assert (str(config), f"{config.limits}") == (str(validated), f"{validated.limits}")


def test_a_file_whose_server_or_crm_is_not_a_table_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """``server = 1`` (or ``crm = "x"`` beside a CRM secret in the environment) used to raise a
    TypeError out of ``load_config`` instead of a configuration error."""
    bad = tmp_path / "server.toml"
    bad.write_text("server = 1\n")
    with pytest.raises(ConfigError, match=r"server: must be a table"):
        load_config(bad, env={})
    crm = tmp_path / "crm.toml"
    crm.write_text('crm = "kommo"\n')
    with pytest.raises(ConfigError, match=r"crm: Input should be a valid dictionary"):
        load_config(crm, env={"SALESBOT_CRM_TOKEN": "t"})


@pytest.mark.parametrize(("key", "value"), [
    ("transcript_max", 0), ("transcript_max", -3), ("conversation_ttl_days", 0), ("outbox_max_attempts", 0),
    ("lock_ttl", 0), ("lock_ttl", float("nan")), ("lock_ttl", float("inf")), ("shutdown_grace", -1),
    ("shutdown_grace", float("nan")),
    ("timer_poll_interval", float("inf")), ("timer_claim_ttl", float("inf")),
    ("timer_worker_dead_after", float("inf")), ("redis_pool_timeout", float("inf")),
    ("shutdown_grace", float("inf")),
])
def test_a_count_or_duration_that_cannot_work_is_refused_at_start(key: str, value: object) -> None:
    """A transcript of 0 entries, a lock that expires at once, a TTL of no days: the start says so
    (before, ``transcript_max = 0`` was taken and every save dropped the whole transcript)."""
    with pytest.raises(ConfigError, match=rf"^invalid configuration: {key}: "):
        load_config(None, env={}, overrides={key: value})
    assert getattr(load_config(None, env={}, overrides={key: 1}), key) == 1


@pytest.mark.parametrize("port", ["99999", "65536", "-1", 70000, -1])
def test_a_port_no_socket_can_have_is_refused_at_start(port: object) -> None:
    """``SALESBOT_PORT=99999`` (or ``-1``) started and printed a listening address on that port."""
    env = {"SALESBOT_PORT": port} if isinstance(port, str) else {}
    with pytest.raises(ConfigError, match=r"^invalid configuration: port: "):
        load_config(None, env=env, overrides={} if env else {"port": port})
    assert load_config(None, env={"SALESBOT_PORT": "65535"}).port == 65535
