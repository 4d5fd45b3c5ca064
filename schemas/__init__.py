"""Wire contracts of streamwarden: protobuf messages and their encode/decode helpers."""

from streamwarden.schemas import streamwarden_pb2 as pb

__all__ = ["pb"]
