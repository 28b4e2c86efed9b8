"""Coordinator settings: flags and ``FEDGE_*`` environment variables, read in this one place."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    rate_limit_per_minute: int = Field(
        600, description="requests one device may make per minute before getting 429"
    )
    retry_min_seconds: float = Field(5.0, description="shortest retry window offered to a device")
    retry_max_seconds: float = Field(3600.0, description="longest retry window offered")
    expiry_sweep_seconds: float = Field(
        1.0, description="how often leases and round deadlines are checked"
    )
