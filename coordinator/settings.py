"""Coordinator settings: flags and ``FEDGE_*`` environment variables, read in this one place."""

from __future__ import annotations

import logging
import os
import secrets

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedge.errors import FedgeError

log = logging.getLogger("fedge.coordinator")

MIN_ADMIN_TOKEN_LENGTH = 16
_MAKE_ONE = 'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


class SettingsError(FedgeError):
    """Settings an operator gave that the coordinator refuses to start with."""


class Settings(BaseSettings):
    """Everything an operator can set. Flags of ``fedge coordinator serve`` override these."""

    model_config = SettingsConfigDict(env_prefix="FEDGE_", extra="ignore")

    db_url: str = Field("sqlite:///fedge.db", description="SQLAlchemy URL (SQLite or PostgreSQL)")
    host: str = "127.0.0.1"
    port: int = 8000
    admin_token: SecretStr | None = Field(
        None, description="bearer token of the admin API; generated and logged when unset"
    )
    max_body_bytes: int = Field(64 * 1024 * 1024, description="largest request body accepted")
    max_json_body_bytes: int = Field(
        64 * 1024, description="largest JSON request body (every route but the binary uploads)"
    )
    rate_limit_per_minute: int = Field(
        600, description="requests one device may make per minute before getting 429"
    )
    rate_limit_url: str | None = Field(
        None,
        description="Redis URL (redis://host:6379/0) of a rate limit shared by every worker and "
        "replica; unset: each process limits on its own",
    )
    retry_min_seconds: float = Field(5.0, description="shortest retry window offered to a device")
    retry_max_seconds: float = Field(3600.0, description="longest retry window offered")
    expiry_sweep_seconds: float = Field(
        1.0, description="how often leases and round deadlines are checked"
    )
    shed_check_ins_above: int | None = Field(
        256,
        ge=1,
        description="requests in flight in one process at which new check-ins are answered 503 "
        "overloaded with Retry-After (heartbeats and uploads never are); unset: never shed",
    )
    shed_retry_after_seconds: float = Field(
        10.0,
        gt=0,
        description="a shed check-in's Retry-After is drawn from [this, twice this] seconds",
    )
    priority_threads: int = Field(
        16,
        ge=1,
        description="worker threads of the lane that serves working devices' heartbeats, "
        "uploads and aborts apart from check-ins",
    )
    allow_seeded_noise: bool = Field(
        False,
        description="accept DP jobs with a reproducible noise seed (the simulator's; never in "
        "service: anyone who knows the seed can subtract the noise)",
    )

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        length = len(token.get_secret_value())
        if length == 0:
            raise ValueError(f"FEDGE_ADMIN_TOKEN is empty: unset it or {_MAKE_ONE}")
        if length < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"FEDGE_ADMIN_TOKEN is too short ({length} characters, at least "
                f"{MIN_ADMIN_TOKEN_LENGTH}): {_MAKE_ONE}"
            )
        return token


def prepare_serve_environment() -> Settings:
    """Check ``FEDGE_*`` once before uvicorn starts its workers, and share one admin token.

    Without ``FEDGE_ADMIN_TOKEN`` a token is generated here, in the parent process, put in the
    environment every worker inherits, and logged once. Bad settings raise :class:`SettingsError`
    with a one-line message.
    """
    try:
        settings = Settings()
    except ValidationError as error:
        raise SettingsError(
            "; ".join(str(e.get("ctx", {}).get("error", e["msg"])) for e in error.errors())
        ) from None
    if settings.admin_token is None:
        token = secrets.token_urlsafe(32)
        os.environ["FEDGE_ADMIN_TOKEN"] = token
        log.warning("no FEDGE_ADMIN_TOKEN set; this run's admin token: %s", token)
        settings = settings.model_copy(update={"admin_token": SecretStr(token)})
    return settings
