"""Settings from the environment and `.env` (python-dotenv), validated once at start-up.

Every variable the project reads is a field of `Settings`, and `.env.example` documents each one.
None is required to train: a fresh clone trains with the defaults. An empty value (`NAME=`) means
"use the default". Some variables come in pairs (a user name needs its password); a half-set pair
and any malformed value stop the program with ONE line naming every such variable.

Secrets are `SecretStr`: they print as '**********', and nothing here puts them in logs, MLflow
params or run.json (the tests check it). Error messages never echo a secret's value.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import UserError, describe

# The stores MLflow's client accepts; the database ones also with a SQLAlchemy driver (postgresql+psycopg2://).
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file", "http", "https", "databricks", "databricks-uc")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")

# Variables that only make sense together: setting one of them requires the others.
PAIRS: tuple[tuple[str, ...], ...] = (
    ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"),
)


class SettingsError(UserError):
    """Missing or malformed environment variables; the message is one line naming each of them."""


class Settings(BaseSettings):
    """Every variable the project reads (training code, compose, DVC remotes)."""

    # env_ignore_empty: `NAME=` in .env (as .env.example ships) means "use the default".
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True, env_ignore_empty=True)

    # --- training: every one optional
    MLFLOW_TRACKING_URI: str = "sqlite:///mlflow.db"
    MLFLOW_HTTP_REQUEST_TIMEOUT: int = Field(default=10, gt=0)
    MLFLOW_TRACKING_USERNAME: str | None = None
    MLFLOW_TRACKING_PASSWORD: SecretStr | None = None
    DATA_DIR: Path | None = None  # overrides the config's paths.data_dir
    OUTPUT_DIR: Path | None = None  # overrides the config's paths.output_dir

    # --- compose (read by docker compose from .env; validated here so a typo fails early and clearly)
    JUPYTER_TOKEN: SecretStr | None = None  # required by `docker compose up jupyter` (compose enforces it)
    MLFLOW_PORT: int = Field(default=5000, ge=1, le=65535)
    JUPYTER_PORT: int = Field(default=8888, ge=1, le=65535)
    HOST_UID: int = Field(default=1000, ge=0)
    HOST_GID: int = Field(default=1000, ge=0)

    # --- serving and monitoring (compose's serve service and `monitoring` profile; README "Serving")
    SERVE_MODEL: str = "outputs/baseline-seed42"  # what `python -m <package>.serve` serves without an argument
    SERVE_PORT: int = Field(default=8080, ge=1, le=65535)
    PROMETHEUS_PORT: int = Field(default=9090, ge=1, le=65535)
    GRAFANA_PORT: int = Field(default=3000, ge=1, le=65535)
    GRAFANA_ADMIN_PASSWORD: SecretStr | None = None  # required by the monitoring profile (Grafana refuses without)

    # --- the team tracking server (compose.team.yaml; compose enforces the required ones, never the training code)
    MLFLOW_TEAM_ADMIN_PASSWORD: SecretStr | None = None
    MLFLOW_TEAM_SECRET_KEY: SecretStr | None = None
    MLFLOW_TEAM_DB_PASSWORD: SecretStr | None = None
    MLFLOW_TEAM_S3_ENDPOINT_URL: str | None = None
    MLFLOW_TEAM_S3_BUCKET: str | None = None
    MLFLOW_TEAM_S3_ACCESS_KEY_ID: SecretStr | None = None
    MLFLOW_TEAM_S3_SECRET_ACCESS_KEY: SecretStr | None = None
    MLFLOW_TEAM_PORT: int = Field(default=5000, ge=1, le=65535)

    # --- remote storage for DVC remotes and MLflow artifacts (read by boto3, gcsfs, adlfs)
    AWS_ACCESS_KEY_ID: SecretStr | None = None
    AWS_SECRET_ACCESS_KEY: SecretStr | None = None
    AWS_DEFAULT_REGION: str | None = None
    AWS_ENDPOINT_URL: str | None = None  # S3-compatible stores (MinIO, Ceph)
    GOOGLE_APPLICATION_CREDENTIALS: Path | None = None
    AZURE_STORAGE_ACCOUNT: str | None = None
    AZURE_STORAGE_KEY: SecretStr | None = None

    @field_validator("MLFLOW_TRACKING_URI")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if re.match(r"^[A-Za-z0-9+.-]+://[^/@]*:[^/@]*@", value):
            # Error messages and the tracking client print the URI: a password in it would leak.
            raise ValueError("holds a password; put credentials in MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD")
        head, colon, _ = value.partition(":")
        scheme, _, driver = head.partition("+")
        # `databricks` alone (no colon) means the default Databricks profile.
        known = scheme in TRACKING_SCHEMES and (colon or scheme.startswith("databricks"))
        if not known or (driver and scheme not in DATABASE_SCHEMES):
            schemes = ", ".join(f"{name}:" for name in TRACKING_SCHEMES)
            raise ValueError(f"'{value}' must start with one of {schemes} (databases also as SCHEME+DRIVER:)")
        return value

    @field_validator("AWS_ENDPOINT_URL")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' must start with http:// or https://")
        return value

    @field_validator("GOOGLE_APPLICATION_CREDENTIALS")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file (the service-account JSON key)")
        return value

    def config_overrides(self) -> list[str]:
        """DATA_DIR / OUTPUT_DIR as config overrides (command-line KEY=VALUE overrides, given after, win)."""
        overrides = []
        for name, key in (("DATA_DIR", "paths.data_dir"), ("OUTPUT_DIR", "paths.output_dir")):
            value = getattr(self, name)
            if value is not None:
                overrides.append(f"{key}={json.dumps(str(value))}")  # JSON-quoted: always read back as a string
        return overrides


def load_dotenv_file(env_file: Path) -> None:
    """Put `.env`'s non-empty values into os.environ; variables already set in the shell win.

    Empty values are skipped rather than exported as "": libraries such as boto3 would take an
    empty AWS_ACCESS_KEY_ID for a real (and wrong) one.
    """
    if not env_file.is_file():
        return
    for name, value in dotenv_values(env_file).items():
        if value and name not in os.environ:
            os.environ[name] = value


def _incomplete_pairs() -> list[str]:
    problems = []
    for pair in PAIRS:
        present = [name for name in pair if os.environ.get(name)]
        if present:
            problems += [f"{name}: required when {present[0]} is set" for name in pair if name not in present]
    return problems


def unset_empty_variables() -> None:
    """An empty variable means "unset": compose's `env_file` passes `NAME=` lines as "", and MLflow or boto3,
    which read os.environ themselves, would take "" for a value (int("") for MLFLOW_HTTP_REQUEST_TIMEOUT)."""
    for name in [name for name, value in os.environ.items() if value == ""]:
        if name in Settings.model_fields or name.startswith("MLFLOW_"):
            del os.environ[name]


def load_settings(env_file: Path = Path(".env")) -> Settings:
    """Load `.env` (if present), then validate the environment; raises one-line SettingsError.

    The message names every problem at once: each missing variable, then each malformed one.
    """
    unset_empty_variables()
    load_dotenv_file(env_file)
    problems = _incomplete_pairs()
    settings = None
    try:
        settings = Settings()
    except ValidationError as error:
        problems.append(describe(error))
    if settings is None or problems:
        raise SettingsError(f"environment ({env_file} or shell): {'; '.join(problems)}")
    return settings
