"""Flink (PyFlink DataStream) bindings of the streamwarden stages, and the tooling to run them."""
