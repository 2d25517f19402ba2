"""Settings: read once from the environment (and an optional ``.env``) at the entry point.

Every setting has a default; secrets are ``SecretStr`` so they never print. Nothing below the
entry point reads ``os.environ``: the values are passed on explicitly.
Imports: pydantic, pydantic-settings.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_state_dir() -> Path:
    """Where the zero-config mode keeps its private Redis: ``$XDG_STATE_HOME/portpatrol``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "portpatrol"


class SettingsError(Exception):
    """Settings that cannot be used; the message lists every problem, one per line."""


class Settings(BaseSettings):
    """portpatrol's configuration (see README.md, "Configuration")."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # repr=False: a Redis URL may carry a password.
    redis_url: str | None = Field(default=None, alias="REDIS_URL", repr=False)
    telegram_bot_token: SecretStr | None = Field(default=None, alias="TELEGRAM_BOT_TOKEN")
    telegram_api_base_url: str = Field(
        default="https://api.telegram.org/bot", alias="TELEGRAM_API_BASE_URL"
    )
    telegram_webhook_secret: SecretStr | None = Field(default=None, alias="TELEGRAM_WEBHOOK_SECRET")
    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_allowed_teams: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), alias="SLACK_ALLOWED_TEAMS"
    )
    slack_allowed_channels: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), alias="SLACK_ALLOWED_CHANNELS"
    )
    slack_api_base_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_BASE_URL")
    admins: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), alias="PORTPATROL_ADMINS"
    )
    public_url: str | None = Field(
        default=None, alias="PORTPATROL_PUBLIC_URL", pattern=r"^https?://[^\s]+$"
    )
    trusted_proxies: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), alias="PORTPATROL_TRUSTED_PROXIES"
    )
    providers_file: Path | None = Field(default=None, alias="PORTPATROL_PROVIDERS_FILE")
    rules_file: Path | None = Field(default=None, alias="PORTPATROL_RULES_FILE")
    profiles_file: Path | None = Field(default=None, alias="PORTPATROL_PROFILES_FILE")
    nmap_max_rate: int = Field(default=300, ge=1, le=10_000, alias="PORTPATROL_NMAP_MAX_RATE")
    state_dir: Path = Field(default_factory=default_state_dir, alias="PORTPATROL_STATE_DIR")
    web_host: str = Field(default="127.0.0.1", alias="PORTPATROL_WEB_HOST")
    web_port: int = Field(default=8080, ge=0, le=65535, alias="PORTPATROL_WEB_PORT")
    user_rate: str = Field(default="3/hour", alias="PORTPATROL_USER_RATE")
    agent_rate: str = Field(default="60/hour", alias="PORTPATROL_AGENT_RATE")
    target_rate: str = Field(default="10/hour", alias="PORTPATROL_TARGET_RATE")
    dedupe_minutes: int = Field(default=10, ge=0, le=1440, alias="PORTPATROL_DEDUPE_MINUTES")
    queue_max: int = Field(default=200, ge=1, alias="PORTPATROL_QUEUE_MAX")
    audit_retention_days: int = Field(
        default=180, ge=1, le=36_500, alias="PORTPATROL_AUDIT_RETENTION_DAYS"
    )
    log_format: str = Field(
        default="console", pattern="^(console|json)$", alias="PORTPATROL_LOG_FORMAT"
    )

    @field_validator(
        "admins", "trusted_proxies", "slack_allowed_teams", "slack_allowed_channels", mode="before"
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("admins")
    @classmethod
    def _check_admins(cls, value: frozenset[str]) -> frozenset[str]:
        # Admins are matched as exact "platform:user" strings: a form that can never match (an
        # upper-case platform, "slack:U1 slack:U2" missing its comma) must fail here, not
        # silently leave the operator without admin rights. Platforms are lower-cased, as the
        # role commands do.
        normalised: set[str] = set()
        for item in value:
            platform, _, user = item.partition(":")
            platform = platform.lower()
            if (
                not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", platform)
                or not 1 <= len(user) <= 128
                or any(char.isspace() or not char.isprintable() for char in user)
            ):
                raise ValueError(f"{item[:64]!r} is not platform:user_id (e.g. slack:U012AB)")
            normalised.add(f"{platform}:{user}")
        return frozenset(normalised)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: frozenset[str]) -> frozenset[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as error:
                raise ValueError(f"{item[:64]!r} is not an address or network") from error
        return value

    @field_validator(
        "telegram_bot_token",
        "telegram_webhook_secret",
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
        "public_url",
        "redis_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `export TELEGRAM_BOT_TOKEN=` means "not set", not "set to nothing".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram accepts only these characters; a secret it rejects would fail at setWebhook.
        if value is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()
        ):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("user_rate", "agent_rate", "target_rate")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        from limits import parse  # noqa: PLC0415 - only needed while validating

        try:
            parse(value)
        except ValueError as error:
            raise ValueError(f"{value[:64]!r} is not a rate like 3/hour") from error
        return value


def load_settings() -> Settings:
    """Read the settings once; raise SettingsError listing every problem."""
    try:
        return Settings()
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"])
            lines.append(f"  {name}: {problem['msg']}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
