"""Tests for bot.settings: defaults, parsing, one error listing all problems, hidden secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from bot.settings import Settings, SettingsError, default_state_dir, load_settings

ALIASES = sorted(field.alias for field in Settings.model_fields.values() if field.alias is not None)
SECRETS = {
    "TELEGRAM_BOT_TOKEN": "123456:telegram-secret-value",
    "SLACK_BOT_TOKEN": "xoxb-slack-secret-value",
    "SLACK_SIGNING_SECRET": "signing-secret-value",
    "SLACK_APP_TOKEN": "xapp-app-secret-value",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run in an empty directory with none of portpatrol's variables set."""
    monkeypatch.chdir(tmp_path)
    for name in ALIASES:
        monkeypatch.delenv(name, raising=False)
    state_home = tmp_path / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    return state_home


def problems(error: SettingsError) -> list[str]:
    """Return the problem lines of a SettingsError (after its heading)."""
    heading, *lines = str(error).splitlines()
    assert heading == "invalid settings:"
    return lines


def test_defaults(clean_environment: Path) -> None:
    """With nothing configured every setting has its documented default."""
    settings = load_settings()
    assert settings.redis_url is None
    assert settings.telegram_bot_token is None
    assert settings.slack_bot_token is None
    assert settings.slack_signing_secret is None
    assert settings.slack_app_token is None
    assert settings.telegram_api_base_url == "https://api.telegram.org/bot"
    assert settings.slack_api_base_url == "https://slack.com/api/"
    assert settings.admins == frozenset()
    assert settings.public_url is None
    assert settings.providers_file is None
    assert settings.rules_file is None
    assert settings.profiles_file is None
    assert settings.nmap_max_rate == 300
    assert settings.state_dir == clean_environment / "portpatrol"
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 8080)
    assert (settings.user_rate, settings.agent_rate, settings.target_rate) == (
        "3/hour",
        "60/hour",
        "10/hour",
    )
    assert settings.dedupe_minutes == 10
    assert settings.queue_max == 200
    assert settings.log_format == "console"


def test_state_dir_falls_back_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without XDG_STATE_HOME the state directory is ~/.local/state/portpatrol."""
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "portpatrol"
    assert load_settings().state_dir == default_state_dir()


def test_environment_values_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Values come from the environment, typed."""
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6399/2")
    monkeypatch.setenv("PORTPATROL_NMAP_MAX_RATE", "50")
    monkeypatch.setenv("PORTPATROL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PORTPATROL_RULES_FILE", str(tmp_path / "rules.yaml"))
    monkeypatch.setenv("PORTPATROL_LOG_FORMAT", "json")
    settings = load_settings()
    assert settings.redis_url == "redis://127.0.0.1:6399/2"
    assert settings.nmap_max_rate == 50
    assert settings.state_dir == tmp_path / "state"
    assert settings.rules_file == tmp_path / "rules.yaml"
    assert settings.log_format == "json"


def test_dotenv_in_working_directory_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A .env in the working directory supplies values; the real environment overrides it."""
    (tmp_path / ".env").write_text(
        "PORTPATROL_NMAP_MAX_RATE=42\nPORTPATROL_WEB_PORT=9000\nUNRELATED=1\n", encoding="utf-8"
    )
    monkeypatch.setenv("PORTPATROL_WEB_PORT", "9100")
    settings = load_settings()
    assert settings.nmap_max_rate == 42
    assert settings.web_port == 9100


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", frozenset()),
        ("slack:U012AB", {"slack:U012AB"}),
        (" slack:U012AB , telegram:123456 ", {"slack:U012AB", "telegram:123456"}),
        (",,slack:U1,, ,telegram:2,", {"slack:U1", "telegram:2"}),
        ("Slack:U1,TELEGRAM:2", {"slack:U1", "telegram:2"}),
        ("slack:U1,slack:U1", {"slack:U1"}),
        ("cli:tester", {"cli:tester"}),
    ],
)
def test_admins_parsing(monkeypatch: pytest.MonkeyPatch, value: str, expected: set[str]) -> None:
    """PORTPATROL_ADMINS is a comma list: spaces and empty items dropped, platforms lower-cased."""
    monkeypatch.setenv("PORTPATROL_ADMINS", value)
    assert load_settings().admins == frozenset(expected)


@pytest.mark.parametrize(
    "value",
    [
        "slack",
        "slack:U1,telegram",
        ":U1",
        "slack:",
        "slack:U1 telegram:2",
        "slack: U1",
        "sl ack:U1",
        "1slack:U1",
        "-oX:U1",
        "slack:U\x1b[31m1",
        "slack:U1\x7f",
        "slack:\u202eU1",
        "slack:" + "U" * 129,
        "x" * 100_000,
    ],
)
def test_bad_admin_items_fail_with_a_short_message(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """An admin item that could never match a caller fails start-up with a bounded, safe message."""
    monkeypatch.setenv("PORTPATROL_ADMINS", value)
    with pytest.raises(SettingsError) as failure:
        load_settings()
    [line] = problems(failure.value)
    assert line.startswith("  PORTPATROL_ADMINS: ")
    assert "is not platform:user_id" in line
    assert len(line) < 300
    assert line.isprintable()


@pytest.mark.parametrize(
    "name", ["PORTPATROL_USER_RATE", "PORTPATROL_AGENT_RATE", "PORTPATROL_TARGET_RATE"]
)
@pytest.mark.parametrize("value", ["lots", "", "3 per fortnight", "3/hour/x", "y" * 100_000])
def test_invalid_rate_strings(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """A rate `limits` cannot parse fails start-up, naming the variable."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as failure:
        load_settings()
    [line] = problems(failure.value)
    assert line.startswith(f"  {name}: ")
    assert "is not a rate like 3/hour" in line
    assert len(line) < 300


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORTPATROL_NMAP_MAX_RATE", "0"),
        ("PORTPATROL_NMAP_MAX_RATE", "10001"),
        ("PORTPATROL_NMAP_MAX_RATE", "fast"),
        ("PORTPATROL_WEB_PORT", "65536"),
        ("PORTPATROL_WEB_PORT", "80; rm -rf /"),
        ("PORTPATROL_DEDUPE_MINUTES", "-1"),
        ("PORTPATROL_QUEUE_MAX", "0"),
        ("PORTPATROL_LOG_FORMAT", "xml"),
        ("PORTPATROL_LOG_FORMAT", "json\n"),
        ("PORTPATROL_LOG_FORMAT", "console; rm -rf /"),
    ],
)
def test_out_of_range_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """Numbers out of range and unknown choices fail start-up naming the variable."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as failure:
        load_settings()
    [line] = problems(failure.value)
    assert line.startswith(f"  {name}: ")


def test_several_problems_reported_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every invalid setting is listed in the one SettingsError, not just the first."""
    bad = {
        "PORTPATROL_ADMINS": "slack",
        "PORTPATROL_NMAP_MAX_RATE": "0",
        "PORTPATROL_WEB_PORT": "70000",
        "PORTPATROL_USER_RATE": "lots",
        "PORTPATROL_TARGET_RATE": "never",
        "PORTPATROL_LOG_FORMAT": "xml",
    }
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as failure:
        load_settings()
    lines = problems(failure.value)
    assert sorted(line.split(":")[0].strip() for line in lines) == sorted(bad)
    assert failure.value.__cause__ is None
    assert failure.value.__suppress_context__


def test_secrets_are_secret_str_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens are SecretStr: usable by the code, absent from repr, str and JSON dumps."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    for field in ("telegram_bot_token", "slack_bot_token", "slack_signing_secret"):
        assert isinstance(getattr(settings, field), SecretStr)
    assert isinstance(settings.slack_app_token, SecretStr)
    assert settings.telegram_bot_token is not None
    assert settings.telegram_bot_token.get_secret_value() == SECRETS["TELEGRAM_BOT_TOKEN"]
    shown = " ".join(
        [repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())]
    )
    for value in SECRETS.values():
        assert value not in shown


def test_secrets_do_not_leak_into_settings_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start-up failure message never quotes a secret that was set alongside bad values."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PORTPATROL_NMAP_MAX_RATE", "0")
    with pytest.raises(SettingsError) as failure:
        load_settings()
    for value in SECRETS.values():
        assert value not in str(failure.value)


def test_settings_are_frozen() -> None:
    """Settings read once cannot be changed afterwards."""
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.nmap_max_rate = 1  # type: ignore[misc]
