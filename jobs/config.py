"""Job configuration: one frozen pydantic model, loaded from YAML plus ``STREAMWARDEN_*`` env overrides.

Environment overrides use ``__`` between levels, e.g. ``STREAMWARDEN_KAFKA__BOOTSTRAP_SERVERS``; they
are read by pydantic-settings, so a string value is taken verbatim (a password may hold ``#``, spaces,
quotes or only digits) and a mapping value (``..._KAFKA__EXTRA``) is JSON. Every error names the file
and the dotted field path, never a value, and is raised at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from streamwarden.operators.config_io import format_validation_error, load_yaml_mapping
from streamwarden.operators.errors import ConfigError

if TYPE_CHECKING:
    from streamwarden.operators.pipeline import StagesConfig

ENV_PREFIX = "STREAMWARDEN_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Strict):
    """How to reach Kafka. Security fields pass straight through to librdkafka."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="librdkafka security.protocol."
    )
    sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-512, OAUTHBEARER.")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password; never printed.")
    ssl_ca_location: str | None = Field(None, description="CA bundle file for TLS.")
    ssl_certificate_location: str | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_key_location: str | None = Field(None, description="Client key for mutual TLS.")
    session_timeout_ms: int = Field(
        10_000, ge=1, description="Group session timeout; the embedded profile uses 2000 for a fast join."
    )
    heartbeat_interval_ms: int = Field(1_000, ge=1, description="Group heartbeat interval.")
    extra: dict[str, str] = Field(
        default_factory=dict, description="Any other librdkafka property, passed through unchanged."
    )

    def client_config(self) -> dict[str, Any]:
        """The librdkafka properties shared by producers, consumers and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update(self.extra)
        return conf


class TopicsConfig(_Strict):
    """Topic names; every stage reads or writes exactly these."""

    events: str = Field("events", description="Input: protobuf Event records.")
    deadletter: str = Field("events.deadletter", description="Output: DeadLetter for undecodable input.")
    actions: str = Field("actions", description="Output: Action decisions.")
    alerts: str = Field("alerts", description="Output: AnomalyAlert FIRING/RESOLVED.")
    features: str = Field("features", description="Output: FeatureRecord feature log (optional).")
    labels: str = Field("labels", description="Input: reviewer decisions for training feedback.")
    statements: str = Field(
        "statements", description="Output: StatementOfReasons (DSA) per enforcing restrictive action."
    )


class LimitsConfig(_Strict):
    """Bounds on one record (``schemas.codec.RecordLimits``): a record beyond one is a dead letter of its
    own kind, never a crash."""

    max_record_bytes: int = Field(256 * 1024, ge=1024, description="Larger records: RECORD_TOO_LARGE.")
    max_id_bytes: int = Field(
        1024, ge=16, le=65_535, description="Ids, IPs, country, content hash: FIELD_TOO_LONG beyond it."
    )
    max_text_bytes: int = Field(
        8192, ge=16, le=65_535, description="The user agent: FIELD_TOO_LONG beyond it."
    )
    max_attributes: int = Field(
        64, ge=0, le=10_000, description="Most Event.attributes entries: FIELD_TOO_LONG beyond it."
    )
    max_dead_letter_original_bytes: int = Field(
        64 * 1024,
        ge=0,
        le=512 * 1024,
        description="A dead letter keeps this much of the record, then its size and SHA-256 (stays under "
        "the producer's 1 MB message limit).",
    )


class SchemaRegistryConfig(_Strict):
    """How event records are framed, and the Confluent Schema Registry that names their schema ids."""

    framing: Literal["auto", "plain", "confluent"] = Field(
        "auto",
        description="plain protobuf, Confluent Schema Registry framing (magic byte 0, schema id, message "
        "indexes), or auto: told apart by the first byte.",
    )
    url: str | None = Field(
        None, description="Schema Registry URL; when set, framed records must name a registered schema id."
    )
    subject: str | None = Field(
        None, description="Subject of the events' schema; None = '<events topic>-value' (TopicNameStrategy)."
    )
    basic_auth_user_info: SecretStr | None = Field(None, description="'user:password'; never printed.")
    schema_ids: list[int] | None = Field(
        None, description="Accepted schema ids, instead of asking the registry (air-gapped deployments)."
    )


class JobConfig(_Strict):
    """Configuration of one streamwarden job run, shared by the Beam and Flink bindings."""

    kafka: KafkaConfig = Field(default_factory=KafkaConfig, description="Broker connection.")  # type: ignore[arg-type]
    topics: TopicsConfig = Field(default_factory=TopicsConfig, description="Topic names.")  # type: ignore[arg-type]
    group_id: str = Field("streamwarden", min_length=1, description="Consumer group of the job.")
    engine: Literal["beam", "flink", "replay"] = Field("beam", description="Which engine runs the job.")
    feature_spec: Path | None = Field(None, description="Feature spec YAML; None = the shipped default.")
    policy: Path | None = Field(None, description="Policy YAML; None = the shipped default.")
    model_card: Path | None = Field(None, description="Model card YAML; None = the shipped default.")
    write_features: bool = Field(False, description="Also emit the FeatureRecord feature log.")
    max_future_ms: int = Field(
        300_000, ge=0, description="Events further ahead of wall clock than this are dead-lettered."
    )
    allowed_lateness_ms: int = Field(
        60_000, ge=0, description="Events older than watermark minus this are counted late, not applied."
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Bounds on one record.")  # type: ignore[arg-type]
    reload_interval_ms: int = Field(
        5_000,
        ge=0,
        description="How often the policy and model files are checked for changes and hot-reloaded "
        "(a file that does not validate is refused, the running one stays); 0 = never.",
    )
    schema_registry: SchemaRegistryConfig = Field(
        default_factory=SchemaRegistryConfig,  # type: ignore[arg-type]
        description="Event framing and the Schema Registry.",
    )
    inject_operator_errors: tuple[tuple[Literal["velocity", "assemble", "score", "decide"], str], ...] = (
        Field(
            (),
            description="Test hook: (stage, event id) pairs; that stage raises for that event on either "
            "engine, which must make the event an OPERATOR_ERROR dead letter and not stop the job.",
        )
    )


class _Environment(EnvSettingsSource):
    """``STREAMWARDEN_*`` variables from a given mapping (``os.environ`` in production, a dict in tests)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class _JobSettings(JobConfig, BaseSettings):
    """``JobConfig`` read from the environment over the YAML data given as keyword arguments."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )
    environ: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return _Environment(settings_cls, cls.environ), init_settings


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> JobConfig:
    """Load a ``JobConfig`` from ``path`` (optional) with ``STREAMWARDEN_*`` environment overrides on top."""
    data = load_yaml_mapping(path) if path is not None else {}
    env = dict(os.environ if environ is None else environ)
    source = str(path) if path is not None else "(defaults)"
    if any(k.upper().startswith(ENV_PREFIX) for k in env):
        source += " + STREAMWARDEN_* environment"
    settings = type("_Bound", (_JobSettings,), {"environ": env})
    try:
        loaded = settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc
    return JobConfig.model_validate(loaded.model_dump())


def stages_config(job: JobConfig, out_of_orderness_ms: int | None = None) -> StagesConfig:
    """The operators' configuration of a job, shared by the engine bindings (``model_card`` None = the
    shipped models; ``out_of_orderness_ms`` None = the operators' default)."""
    from streamwarden.jobs.schema_registry import accepted_schema_ids
    from streamwarden.operators.pipeline import StagesConfig
    from streamwarden.schemas.codec import RecordLimits

    return StagesConfig(
        feature_spec=job.feature_spec,
        model_cards=(job.model_card,) if job.model_card is not None else None,
        policy=job.policy,
        allowed_lateness_ms=job.allowed_lateness_ms,
        out_of_orderness_ms=out_of_orderness_ms,
        max_future_ms=job.max_future_ms,
        limits=RecordLimits(**job.limits.model_dump()),
        reload_interval_ms=job.reload_interval_ms,
        framing=job.schema_registry.framing,
        schema_ids=accepted_schema_ids(job),
        inject_errors=frozenset(job.inject_operator_errors),
    )
