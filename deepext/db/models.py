"""Typed ORM models of the metadata store (SQLAlchemy 2).

The schema itself is owned by the Alembic migrations in `deepext/db/migrations/`; these classes
must match them (a test compares the two). Later features add columns and tables by new migrations.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JsonType,
        list[Any]: JsonType,
        dt.datetime: DateTime(timezone=True),
    }


class Role(enum.StrEnum):
    """Project roles; `admin` is system-wide and lives on the user."""

    OWNER = "owner"
    MAINTAINER = "maintainer"
    MEMBER = "member"
    VIEWER = "viewer"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CasbinRule(Base):
    """One Casbin policy line (`p, role:viewer, *, datasets, read` or `g, user:3, role:owner,
    project:7`), in the layout of the Casbin SQLAlchemy adapter, which loads them."""

    __tablename__ = "casbin_rule"

    id: Mapped[int] = mapped_column(primary_key=True)
    ptype: Mapped[str | None] = mapped_column(String(255))
    v0: Mapped[str | None] = mapped_column(String(255))
    v1: Mapped[str | None] = mapped_column(String(255))
    v2: Mapped[str | None] = mapped_column(String(255))
    v3: Mapped[str | None] = mapped_column(String(255))
    v4: Mapped[str | None] = mapped_column(String(255))
    v5: Mapped[str | None] = mapped_column(String(255))

    def __str__(self) -> str:  # the adapter hands this text to Casbin's policy-line parser
        values = (self.v0, self.v1, self.v2, self.v3, self.v4, self.v5)
        return ", ".join([self.ptype or "", *(v for v in values if v is not None)])


class PolicyVersion(Base):
    """The access version: bumped in every transaction that changes `casbin_rule`, revokes a token
    or changes an account, so each API process knows when to reload its enforcer and re-check the
    tokens it remembers."""

    __tablename__ = "policy_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class ApiToken(Base):
    """A bearer token: a login session (`kind=session`, short-lived) or a personal API token.

    Only the sha256 of the secret is stored. `project_ids` and `role` narrow what the token may do
    below its user's own rights (None: no narrowing)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # session | personal
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    project_ids: Mapped[list[Any] | None] = mapped_column()
    role: Mapped[str | None] = mapped_column(String(32))
    expires_at: Mapped[dt.datetime] = mapped_column()
    revoked_at: Mapped[dt.datetime | None] = mapped_column()
    last_used_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LoginFailure(Base):
    """A failed login, counted per account and per client address to rate-limit guessing."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_username_at", "username", "at"),
        Index("ix_login_failures_client_addr_at", "client_addr", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    username: Mapped[str] = mapped_column(String(64))
    client_addr: Mapped[str] = mapped_column(String(64))


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    project: Mapped[Project] = relationship()
    versions: Mapped[list[DatasetVersion]] = relationship(back_populates="dataset", order_by="DatasetVersion.version")


class DatasetVersion(Base):
    """An immutable snapshot of a dataset's rows.

    Rows live in the artifact store as Parquet `parts`; an incremental version lists its parent's
    parts plus its own, so appending never copies old rows. `content_hash` identifies the content
    (pushing it again returns this version); `source_hash` is the sha256 of the pushed file's bytes.
    """

    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "version"),
        UniqueConstraint("dataset_id", "content_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    derivation: Mapped[str] = mapped_column(String(32))  # push | append | split
    content_hash: Mapped[str] = mapped_column(String(64))
    source_hash: Mapped[str | None] = mapped_column(String(64))
    source_name: Mapped[str | None] = mapped_column(String(512))
    source_format: Mapped[str] = mapped_column(String(16))  # jsonl | csv | parquet | hf
    format: Mapped[str] = mapped_column(String(32))  # prompt_completion | chat | ...
    row_count: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    schema: Mapped[dict[str, Any]] = mapped_column()
    stats: Mapped[dict[str, Any]] = mapped_column()
    parts: Mapped[list[Any]] = mapped_column()
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="versions")
    labels: Mapped[list[DatasetVersionLabel]] = relationship(
        cascade="all, delete-orphan", order_by="DatasetVersionLabel.label"
    )


class DatasetVersionLabel(Base):
    __tablename__ = "dataset_version_labels"

    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True)


class PretrainedModel(Base):
    """A model registered once by hub id or folder; fine-tunes descend from it."""

    __tablename__ = "base_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    source: Mapped[str] = mapped_column(String(1024))  # hub id, local path or gguf:<sha256>
    artifact_key: Mapped[str | None] = mapped_column(String(64))
    architecture: Mapped[str | None] = mapped_column(String(128))
    parameters: Mapped[int | None] = mapped_column(BigInteger)
    license: Mapped[str | None] = mapped_column(String(128))
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """An immutable trained model with its lineage."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"))
    parent_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    dataset_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    kind: Mapped[str] = mapped_column(String(16))  # full | lora
    artifact_key: Mapped[str] = mapped_column(String(64))
    config_hash: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stage: Mapped[str] = mapped_column(String(16), default="candidate")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Usage counters, incremented by the serving layer.
    usage_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    usage_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    last_used_at: Mapped[dt.datetime | None] = mapped_column()


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_queue", "state", "priority", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # sft | grpo | eval | custom | sweep | export
    name: Mapped[str] = mapped_column(String(128), default="")
    submitted_by: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED)
    config: Mapped[dict[str, Any]] = mapped_column()
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    ray_job_id: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the latest value of each metric
    output_key: Mapped[str | None] = mapped_column(String(64))  # artifact tree of the job's outputs
    profile: Mapped[str | None] = mapped_column(String(80))  # NAME@N of the profile it started from
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()


class JobEvent(Base):
    """One state transition of a job, with its reason."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")


class JobMetric(Base):
    """Metrics a running job reported at one step."""

    __tablename__ = "job_metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    values: Mapped[dict[str, Any]] = mapped_column()


class SweepTrial(Base):
    """One trial of a sweep job: the values it tried, where it is, and its latest metrics."""

    __tablename__ = "sweep_trials"
    __table_args__ = (UniqueConstraint("job_id", "trial_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    trial_id: Mapped[str] = mapped_column(String(64))  # Ray Tune's
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... in start order
    state: Mapped[str] = mapped_column(String(16))  # running | completed | stopped | failed
    config: Mapped[dict[str, Any]] = mapped_column()  # field path -> value tried
    metrics: Mapped[dict[str, Any]] = mapped_column()
    steps: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TrainingProfile(Base):
    """An immutable version of a named preset of training settings (part of a GRPO or SFT config)."""

    __tablename__ = "training_profiles"
    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # grpo | sft
    description: Mapped[str] = mapped_column(Text, default="")
    settings: Mapped[dict[str, Any]] = mapped_column()
    content_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """An action taken on the platform, or a refused attempt; `entry_hash` chains each row to the
    one before it. Append-only: database triggers refuse UPDATE and DELETE. `project_id` has no
    foreign key on purpose: the log outlives what it records."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[int | None] = mapped_column(index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    token_id: Mapped[int | None] = mapped_column()
    outcome: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")
    client_addr: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class Deployment(Base):
    """A model version served by Ray Serve: `deploying` -> `running` | `failed`; `stopping` ->
    `stopped`. Names are unique among a project's deployments that are not stopped (checked in
    code: a stopped name can be deployed again)."""

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_project_id_name", "project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    state: Mapped[str] = mapped_column(String(16))
    min_replicas: Mapped[int] = mapped_column(Integer)
    max_replicas: Mapped[int] = mapped_column(Integer)
    cpus_per_replica: Mapped[float] = mapped_column(Float)
    gpus_per_replica: Mapped[float] = mapped_column(Float)
    max_model_len: Mapped[int] = mapped_column(Integer)
    # LoRA adapters this deployment's engine can hold per replica (0: LoRA off).
    lora_slots: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A LoRA version's deployment runs on its host's engine; None: it owns an engine.
    host_deployment_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id"))
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EvalSuite(Base):
    """An immutable version of an evaluation suite: its checks and the exact dataset version it reads.

    `spec` is the suite as pushed with its dataset reference pinned to `PROJECT/NAME@N`;
    `content_hash` is the sha256 of that spec's canonical JSON.
    """

    __tablename__ = "eval_suites"
    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column()
    content_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EvalRun(Base):
    """One evaluation of a suite version against a target (a model version, an endpoint, a provider)."""

    __tablename__ = "eval_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    suite_id: Mapped[int] = mapped_column(ForeignKey("eval_suites.id", ondelete="CASCADE"), index=True)
    target_kind: Mapped[str] = mapped_column(String(16))  # model_version | endpoint | provider
    target: Mapped[str] = mapped_column(String(512))  # NAME@N for a model version, else a URL or provider name
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    state: Mapped[str] = mapped_column(String(16), default="running")  # running | succeeded | failed
    aggregates: Mapped[dict[str, Any]] = mapped_column(default=dict)
    examples_count: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column()


class EvalExample(Base):
    """One dataset row of a run: what the model was asked, what it wrote, and each check's verdict.

    `checks` maps a check name to {passed, score, reason, path}; `passed` is True when every
    error and critical check passed.
    """

    __tablename__ = "eval_examples"

    run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)  # the row's position in the suite's dataset
    input: Mapped[dict[str, Any]] = mapped_column()
    prompt: Mapped[str] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text)
    checks: Mapped[dict[str, Any]] = mapped_column()
    passed: Mapped[bool] = mapped_column(Boolean)


class Provider(Base):
    """An external model provider a project calls through the gateway (`PROJECT/PROVIDER/MODEL`):
    an OpenAI-compatible base URL or Anthropic's Messages API. The API key is stored encrypted
    (`deepext/serve/providers/secrets.py`); `api_key_hint` keeps its last characters for display."""

    __tablename__ = "providers"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # openai | anthropic
    base_url: Mapped[str] = mapped_column(String(512))
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    api_key_hint: Mapped[str | None] = mapped_column(String(8))
    models: Mapped[list[Any] | None] = mapped_column()  # allow-list of model names; None: any
    timeout_s: Mapped[float] = mapped_column(Float)
    connect_timeout_s: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class UsageEvent(Base):
    """One call through the /v1 gateway to a deployment or a provider, ok or not. `model_version_id`
    and `provider_id` have no foreign key on purpose: the accounting outlives what it counts."""

    __tablename__ = "usage_events"
    __table_args__ = (Index("ix_usage_events_project_id_at", "project_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[int | None] = mapped_column()
    target_kind: Mapped[str] = mapped_column(String(16))  # deployment | provider
    model_version_id: Mapped[int | None] = mapped_column()
    provider_id: Mapped[int | None] = mapped_column()
    model: Mapped[str] = mapped_column(String(255))  # the public name the client called
    endpoint: Mapped[str] = mapped_column(String(16))  # chat | completions
    stream: Mapped[bool] = mapped_column(Boolean)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)  # streams: until the first token went out
    status: Mapped[str] = mapped_column(String(8))  # ok | error
    error: Mapped[str | None] = mapped_column(Text)


class KnowledgeBase(Base):
    """A project's searchable documents: their chunks live in the vector store's collection
    `kb_<id>`, embedded with `embedding_model` (`dimension` values per vector)."""

    __tablename__ = "knowledge_bases"
    # Ids are never reused (SQLite too): they name vector collections and chunk owners.
    __table_args__ = (UniqueConstraint("project_id", "name"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    embedding_model: Mapped[str] = mapped_column(String(128))
    dimension: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class KnowledgeDocument(Base):
    """One document of a knowledge base; the same content (`content_sha256`) is stored once."""

    __tablename__ = "knowledge_documents"
    __table_args__ = (
        UniqueConstraint("knowledge_base_id", "name"),
        UniqueConstraint("knowledge_base_id", "content_sha256"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    knowledge_base_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # text | markdown | pdf
    content_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    chunk_count: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
