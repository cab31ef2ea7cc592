"""Settings from the environment and `.env` (python-dotenv), validated once at start-up."""

from __future__ import annotations

from pathlib import Path

from dotenv import load_dotenv
from pydantic import Field, PositiveInt, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import UserError

TRACKING_SCHEMES = ("sqlite://", "file:", "http://", "https://", "databricks")


class SettingsError(UserError):
    """Missing or malformed environment variables; the message is one line naming each of them."""


class Settings(BaseSettings):
    """Every variable the training code reads. `.env.example` documents each one."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True)

    MLFLOW_TRACKING_URI: str = "sqlite:///mlflow.db"
    MLFLOW_HTTP_REQUEST_TIMEOUT: PositiveInt = 10
    # Secrets: typed SecretStr so they print as '**********' and never reach logs or run.json.
    MLFLOW_TRACKING_PASSWORD: SecretStr | None = Field(default=None)
    JUPYTER_TOKEN: SecretStr | None = Field(default=None)

    @field_validator("MLFLOW_TRACKING_URI")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(TRACKING_SCHEMES):
            raise ValueError(f"'{value}' must start with one of {', '.join(TRACKING_SCHEMES)}")
        return value


def load_settings(env_file: Path = Path(".env")) -> Settings:
    """Load `.env` (if present; real environment variables win) and validate."""
    load_dotenv(env_file, override=False)
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        )
        raise SettingsError(f"environment ({env_file} or shell): {problems}") from None
