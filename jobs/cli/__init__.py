"""The ``streamwarden`` commands: one module per command group, registered in ``app``."""
