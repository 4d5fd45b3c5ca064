"""The project's exception root. Exceptions are for start-up and programmer errors;
bad records on the hot path are data (dead letters), never exceptions."""

from __future__ import annotations


class StreamwardenError(Exception):
    """Root of every error streamwarden raises on purpose."""


class ConfigError(StreamwardenError):
    """A config file is missing or invalid; the message names the file and the field."""


class ModelError(StreamwardenError):
    """A model card or ONNX file is missing, corrupt or does not match the feature spec."""


class BrokerError(StreamwardenError):
    """The embedded broker could not be started, reached or stopped."""
