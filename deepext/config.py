"""Platform settings: one typed object read from `DEEPEXT_*` variables and an optional config file.

Defaults are embedded, so a laptop needs nothing set: everything lives under the home folder
(`~/.deepext` unless `DEEPEXT_HOME` says otherwise) - SQLite metadata, the artifact store, the
embedded vector store - and Ray starts locally. Production points the same fields elsewhere:

    DEEPEXT_DATABASE_URL=postgresql+psycopg://user@db/deepext
    DEEPEXT_ARTIFACT_URI=s3://bucket/deepext      (or a shared NFS path every Ray node mounts)
    DEEPEXT_RAY_ADDRESS=ray://head:10001          (or "auto" inside the cluster)

A config file (TOML or YAML) named by `DEEPEXT_CONFIG`, else `<home>/config.toml` when present,
supplies values below the environment. Nothing is read at import: call `get_settings()`.
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from deepext.errors import InvalidInput

DEFAULT_HOME = Path("~/.deepext")


class Settings(BaseSettings):
    """Everything the platform needs to know about where it runs."""

    model_config = SettingsConfigDict(env_prefix="DEEPEXT_", extra="forbid", validate_default=True)

    home: Path = Field(DEFAULT_HOME, description="Folder for the embedded defaults.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in the home folder.")
    artifact_uri: str = Field("", description="Local folder or pyarrow/fsspec URI of the artifact store.")
    vector_store_uri: str = Field("", description="Folder or URI of the embedded LanceDB vector store.")
    vector_store: Literal["lancedb", "weaviate"] = Field(
        "lancedb", description="Knowledge-base vectors: embedded LanceDB, or the Weaviate server at weaviate_url."
    )
    weaviate_url: str = Field("", description="Weaviate's HTTP URL, e.g. http://weaviate:8080 (vector_store=weaviate).")
    weaviate_grpc_port: int = Field(50051, ge=1, le=65535, description="Weaviate's gRPC port (same host).")
    weaviate_api_key: SecretStr | None = Field(None, description="Weaviate API key, if the server wants one.")
    ray_address: str | None = Field(None, description="Ray cluster address; unset starts a local Ray.")
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs a local Ray may use.")
    ray_dashboard_port: int = Field(8265, ge=0, le=65535)
    ray_jobs_url: str | None = Field(None, description="Ray Jobs API URL; default: the dashboard of ray_address.")
    jobs_per_project: int = Field(2, ge=1, description="Jobs of one project that may run at once.")
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    ui_enabled: bool = Field(True, description="`deepext up` also starts the web app (Gradio).")
    ui_host: str = "127.0.0.1"
    ui_port: int = Field(7860, ge=0, le=65535, description="Port of the web app.")
    ui_session_secret: SecretStr | None = Field(
        None,
        description="Encrypts the session the web app keeps in the browser across reloads; set the same value on "
        "every web-app replica. Unset: a new one per start (users log in again after a restart).",
    )
    session_minutes: int = Field(60, ge=1, le=7 * 24 * 60, description="Lifetime of a login session token.")
    api_max_upload_mb: int = Field(1024, ge=1, description="Largest dataset upload the API accepts.")
    air_gapped: bool = Field(False, description="Refuse every outbound call to external providers.")
    ollama_url: str | None = Field(
        None, description="An Ollama server export jobs may push GGUF models to, e.g. http://localhost:11434."
    )
    lmstudio_models_dir: Path | None = Field(
        None, description="LM Studio's models folder, where export jobs may write GGUF files."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Process logs: plain text, or one JSON object per line (and Ray's JSON logs)."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet key(s), comma-separated, the first encrypting, that encrypt provider API keys at "
        "rest; unset: a key file created once in the home folder.",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, home: Path) -> Path:
        return home.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'deepext.db'}"

    @property
    def resolved_artifact_uri(self) -> str:
        return self.artifact_uri or str(self.home / "artifacts")

    @property
    def resolved_vector_store_uri(self) -> str:
        return self.vector_store_uri or str(self.home / "vectors")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ConfigFileSource(settings_cls))


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values from `DEEPEXT_CONFIG` or `<home>/config.toml`; the environment wins over them."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        raise NotImplementedError  # __call__ below reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = config_file_path()
        if path is None:
            return {}
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            raise InvalidInput(f"config file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidInput(f"config file {path}: expected a table of settings, got {type(data).__name__}")
        return data


def config_file_path() -> Path | None:
    """The config file in force, if any: `DEEPEXT_CONFIG`, else `<home>/config.toml`."""
    named = os.environ.get("DEEPEXT_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise InvalidInput(f"DEEPEXT_CONFIG names {path}, which is not a file")
        return path
    home = Path(os.environ.get("DEEPEXT_HOME", str(DEFAULT_HOME))).expanduser()
    default = home / "config.toml"
    return default if default.is_file() else None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use."""
    return Settings()
