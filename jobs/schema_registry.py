"""The Confluent Schema Registry side of the event contract: which schema ids the job accepts, and a
serializer producers (``generate``, ``deadletter replay``) use to write framed records.

The hot path never calls the registry: ``schemas.codec.decode_event`` reads the framing itself (a
header check and one protobuf parse). The registry is asked once, at start-up, for the ids registered
under the events' subject; a framed record naming another id is dead-lettered as
``UNKNOWN_SCHEMA_VERSION``. Needs the ``registry`` extra (``confluent_kafka.schema_registry``'s deps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamwarden.operators.errors import ConfigError

if TYPE_CHECKING:
    from streamwarden.jobs.config import JobConfig


def subject_name(job: JobConfig) -> str:
    """The events' subject: configured, or ``<events topic>-value`` (Confluent's TopicNameStrategy)."""
    return job.schema_registry.subject or f"{job.topics.events}-value"


def registry_client(job: JobConfig) -> Any:
    """A ``SchemaRegistryClient`` for the configured URL (``ConfigError`` without one)."""
    conf = job.schema_registry
    if conf.url is None:
        raise ConfigError("schema_registry.url is not set")
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as exc:  # authlib / cachetools / googleapis-common-protos missing
        raise ConfigError(
            f"the Schema Registry client needs the 'registry' extra (pip install 'streamwarden[registry]'): {exc}"
        ) from exc
    client_conf: dict[str, str] = {"url": conf.url}
    if conf.basic_auth_user_info is not None:
        client_conf["basic.auth.user.info"] = conf.basic_auth_user_info.get_secret_value()
    return SchemaRegistryClient(client_conf)


def registered_schema_ids(client: Any, subject: str) -> frozenset[int]:
    """Every schema id registered under ``subject`` (all versions: old producers keep working)."""
    try:
        versions = client.get_versions(subject)
        return frozenset(int(client.get_version(subject, v).schema_id) for v in versions)
    except Exception as exc:  # SchemaRegistryError, connection errors: one clear start-up error
        raise ConfigError(f"Schema Registry: cannot list the versions of subject {subject!r}: {exc}") from exc


def accepted_schema_ids(job: JobConfig, client: Any = None) -> frozenset[int] | None:
    """The schema ids a framed event may name: the configured list, else the registry's ids for the
    subject, else None (any id; the payload must still parse as an ``Event``)."""
    conf = job.schema_registry
    if conf.schema_ids is not None:
        return frozenset(conf.schema_ids)
    if conf.url is None and client is None:
        return None
    ids = registered_schema_ids(client if client is not None else registry_client(job), subject_name(job))
    if not ids:
        raise ConfigError(f"Schema Registry: subject {subject_name(job)!r} has no registered schema")
    return ids


def event_serializer(client: Any) -> Any:
    """confluent-kafka's ``ProtobufSerializer`` for ``Event`` (registers the schema on first use)."""
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

    from streamwarden.schemas import streamwarden_pb2 as pb

    return ProtobufSerializer(pb.Event, client, {"use.deprecated.format": False})
