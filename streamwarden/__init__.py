"""streamwarden: real-time anti-abuse stream processing on Beam and Flink.

The repository keeps its top-level folders (``jobs/``, ``operators/``, ``schemas/``, ``models/``,
``deploy/``); this package maps each into the one import namespace as ``streamwarden.<folder>``
(see ``docs/architecture.md``, "Layout").
"""
